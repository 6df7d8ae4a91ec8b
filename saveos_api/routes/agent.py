"""Agent endpoints: heartbeat (hands out queued jobs) and idempotent reports.

Each handler is one short transaction of Core statements; state changes are conditional
UPDATEs (`... WHERE state = 'queued'`), so concurrent requests never need row locks.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from saveos_api import schemas
from saveos_api.auth import AgentPrincipal, bearer, forbidden
from saveos_api.deps import API_PREFIX, AgentDep, JobId, SessionDep
from saveos_api.models import (
    Agent,
    CheckResult,
    DrillResult,
    Job,
    OffsiteSync,
    Snapshot,
    utcnow,
)
from saveos_api.ratelimit import check_report_bounds

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


def _field_error(loc: list[Any], msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": loc, "msg": msg, "type": "value_error"}])


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


def _check_job(session: Session, principal: AgentPrincipal, job_id: int | None) -> None:
    if job_id is None:
        return
    owner = session.scalar(sa.select(Job.agent_id).where(Job.id == job_id))
    if owner is None:
        raise _field_error(["body", "job_id"], f"job {job_id} does not exist")
    if owner != principal.agent_id:
        raise forbidden(f"job {job_id} belongs to another agent")


def _record_report(
    request: Request,
    session: Session,
    principal: AgentPrincipal,
    model,
    body: schemas.Input,
    response: Response,
    exclude: frozenset[str] = frozenset(),
) -> schemas.ReportAck:
    """Insert once per (agent, report_id); a replay answers 200 with the first row's id.

    A new report is refused (429) past the agent's rate or its day's bound (ratelimit.py)."""
    state = request.app.state
    existing = session.scalar(
        sa.select(model.id).where(
            model.agent_id == principal.agent_id, model.report_id == body.report_id
        )
    )
    if existing is None:
        check_report_bounds(state, session, model, principal.agent_id)
        _check_job(session, principal, body.job_id)
        values = body.model_dump(exclude=set(exclude))
        values.update(agent_id=principal.agent_id, received_at=utcnow())
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        new_id = session.execute(
            dialect.insert(model)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["agent_id", "report_id"])
            .returning(model.id)
        ).scalar()
        session.commit()
        if new_id is not None:
            response.status_code = 201
            return schemas.ReportAck(id=new_id, duplicate=False)
        # Lost a race with a concurrent replay of the same report.
        existing = session.scalar(
            sa.select(model.id).where(
                model.agent_id == principal.agent_id, model.report_id == body.report_id
            )
        )
    response.status_code = 200
    return schemas.ReportAck(id=existing, duplicate=True)


@router.post(
    "/reports/snapshots",
    response_model=schemas.ReportAck,
    status_code=201,
    responses=REPORT_RESPONSES,
)
def report_snapshot(
    body: schemas.SnapshotReport,
    principal: AgentDep,
    request: Request,
    response: Response,
    session: SessionDep,
):
    if body.warnings is None:
        body.warnings = []
    ack = _record_report(
        request, session, principal, Snapshot, body, response, frozenset({"repository"})
    )
    if body.repository is not None and not ack.duplicate:
        _record_repository(session, principal.agent_id, body.repository, body.finished_at)
    return ack


def _record_repository(
    session: Session, agent_id: int, repo: schemas.RepositoryReport, finished_at
) -> None:
    """Where the agent's repository lives; a report older than the one recorded changes nothing
    (reports replayed from a spool arrive out of order)."""
    session.execute(
        sa.update(Agent)
        .where(
            Agent.id == agent_id,
            sa.or_(Agent.repo_reported_at.is_(None), Agent.repo_reported_at <= finished_at),
        )
        .values(
            repo_server=repo.server,
            repo_path=repo.path,
            repo_quota_bytes=repo.quota_bytes,
            repo_used_bytes=repo.used_bytes,
            repo_reported_at=finished_at,
        )
    )
    session.commit()


@router.post(
    "/reports/checks", response_model=schemas.ReportAck, status_code=201, responses=REPORT_RESPONSES
)
def report_check(
    body: schemas.CheckReport,
    principal: AgentDep,
    request: Request,
    response: Response,
    session: SessionDep,
):
    return _record_report(request, session, principal, CheckResult, body, response)


@router.post(
    "/reports/drills", response_model=schemas.ReportAck, status_code=201, responses=REPORT_RESPONSES
)
def report_drill(
    body: schemas.DrillReport,
    principal: AgentDep,
    request: Request,
    response: Response,
    session: SessionDep,
):
    return _record_report(request, session, principal, DrillResult, body, response)


@router.post(
    "/reports/offsite",
    response_model=schemas.ReportAck,
    status_code=201,
    responses=REPORT_RESPONSES,
)
def report_offsite(
    body: schemas.OffsiteReport,
    principal: AgentDep,
    request: Request,
    response: Response,
    session: SessionDep,
):
    server = session.scalar(sa.select(Agent.offsite_server).where(Agent.id == principal.agent_id))
    if server is not None:
        raise forbidden(f"this host's offsite copy is made by its repository server {server}")
    return _record_report(request, session, principal, OffsiteSync, body, response)


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
