"""Agent endpoints: heartbeat (hands out queued jobs) and idempotent reports.

Heartbeats and reports are written by group-commit writers (saveos_api/heartbeats/,
saveos_api/reports/). Each other handler is one short transaction of Core statements; state
changes are conditional UPDATEs (`... WHERE state = 'queued'`), so concurrent requests never
need row locks.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request, Response

from saveos_api import schemas
from saveos_api.auth import bearer, forbidden
from saveos_api.deps import API_PREFIX, AgentDep, JobId, SessionDep
from saveos_api.models import Agent, Job, utcnow
from saveos_api.reports import CHECKS, DRILLS, OFFSITE, SNAPSHOTS
from saveos_api.reports.kinds import Kind

ERRORS = {
    401: {"description": "Missing, malformed, unknown or revoked token"},
    403: {
        "description": "An operator's token, another agent's resource, or an offsite report "
        "for a copy its repository server makes"
    },
    429: {"description": "Too many reports from this agent (Retry-After says when to retry)"},
    422: {"description": "Invalid input; the detail names the field"},
}
router = APIRouter(prefix=API_PREFIX, tags=["agent"], responses=ERRORS)
REPORT_RESPONSES = {200: {"model": schemas.ReportAck, "description": "Replay: nothing written"}}
Token = Annotated[str, Depends(bearer)]


@router.get("/agents/me", response_model=schemas.AgentOut)
def me(principal: AgentDep, session: SessionDep):
    return session.get(Agent, principal.agent_id)


@router.post("/agents/heartbeat", response_model=schemas.HeartbeatOut)
async def heartbeat(
    body: schemas.HeartbeatIn, request: Request, token: Annotated[str, Depends(bearer)]
):
    """Authenticated and written by the group-commit writer (saveos_api/heartbeats/).

    Ordinary heartbeats are answered by HeartbeatFastPath before they reach this route; it
    serves the rest (and documents the endpoint), with the same writer and the same answers.
    """
    return await request.app.state.heartbeats.submit(token, body)


async def _report(kind: Kind, body, request: Request, response: Response, token: str):
    """Written by the group-commit report writer (saveos_api/reports/), as on the fast path;
    require_agent has refused a bad token before the body was validated, as always."""
    status, ack = await request.app.state.reports.submit(token, kind, body)
    response.status_code = status
    return ack


@router.post(
    "/reports/snapshots",
    response_model=schemas.ReportAck,
    status_code=201,
    responses=REPORT_RESPONSES,
)
async def report_snapshot(
    body: schemas.SnapshotReport, _: AgentDep, request: Request, response: Response, token: Token
):
    return await _report(SNAPSHOTS, body, request, response, token)


@router.post(
    "/reports/checks", response_model=schemas.ReportAck, status_code=201, responses=REPORT_RESPONSES
)
async def report_check(
    body: schemas.CheckReport, _: AgentDep, request: Request, response: Response, token: Token
):
    return await _report(CHECKS, body, request, response, token)


@router.post(
    "/reports/drills", response_model=schemas.ReportAck, status_code=201, responses=REPORT_RESPONSES
)
async def report_drill(
    body: schemas.DrillReport, _: AgentDep, request: Request, response: Response, token: Token
):
    return await _report(DRILLS, body, request, response, token)


@router.post(
    "/reports/offsite",
    response_model=schemas.ReportAck,
    status_code=201,
    responses=REPORT_RESPONSES,
)
async def report_offsite(
    body: schemas.OffsiteReport, _: AgentDep, request: Request, response: Response, token: Token
):
    return await _report(OFFSITE, body, request, response, token)


@router.post(
    "/jobs/{job_id}/result",
    response_model=schemas.ReportAck,
    status_code=201,
    responses={
        **REPORT_RESPONSES,
        404: {"description": "No such job"},
        409: {"description": "Job already finished by another report"},
    },
)
def job_result(
    job_id: JobId,
    body: schemas.JobResultIn,
    principal: AgentDep,
    response: Response,
    session: SessionDep,
):
    finished = session.execute(
        sa.update(Job)
        .where(
            Job.id == job_id,
            Job.agent_id == principal.agent_id,
            Job.state.in_(("queued", "running")),
        )
        .values(
            state=body.state,
            finished_at=utcnow(),
            result=body.result,
            result_report_id=body.report_id,
        )
    ).rowcount
    session.commit()
    if finished:
        response.status_code = 201
        return schemas.ReportAck(id=job_id, duplicate=False)
    job = session.execute(
        sa.select(Job.agent_id, Job.result_report_id).where(Job.id == job_id)
    ).first()
    if job is None:
        raise HTTPException(404, detail=f"job {job_id} not found")
    if job.agent_id != principal.agent_id:
        raise forbidden(f"job {job_id} belongs to another agent")
    if job.result_report_id == body.report_id:
        response.status_code = 200
        return schemas.ReportAck(id=job_id, duplicate=True)
    raise HTTPException(409, detail=f"job {job_id} is already finished by another report")


@router.post(
    "/jobs/{job_id}/progress",
    response_model=schemas.JobProgressOut,
    responses={404: {"description": "No such job"}},
)
def job_progress(
    job_id: JobId, body: schemas.JobProgressIn, principal: AgentDep, session: SessionDep
):
    """While the job runs its result holds {"progress": {...}}; the final result replaces it.
    Late progress (the job already finished) changes nothing: updated=false."""
    progress = {**body.model_dump(exclude_none=True), "at": utcnow().isoformat()}
    updated = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.agent_id == principal.agent_id, Job.state == "running")
        .values(result={"progress": progress})
    ).rowcount
    session.commit()
    if not updated:
        owner = session.scalar(sa.select(Job.agent_id).where(Job.id == job_id))
        if owner is None:
            raise HTTPException(404, detail=f"job {job_id} not found")
        if owner != principal.agent_id:
            raise forbidden(f"job {job_id} belongs to another agent")
    return {"updated": bool(updated)}
