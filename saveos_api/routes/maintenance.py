"""Admin endpoints for central retention: the controller records each run on a host's repository
(`saveos prune`, `saveos repo rollback`) and reads back what the next run holds it to, and the
offsite copies the repository server made of it after such a run."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import HTTPException, Query, Request, Response

from saveos_api import schemas
from saveos_api.audit import audit
from saveos_api.deps import (
    NOT_FOUND,
    AgentId,
    SessionDep,
    admin_router,
    get_agent_or_404,
    newest_of_agent,
)
from saveos_api.models import OffsiteSync, RepoMaintenance, Snapshot

router = admin_router("maintenance")
# Archives a host reported as made: an "ok" or "warning" backup left an archive behind.
MADE = ("ok", "warning")


@router.post(
    "/agents/{agent_id}/maintenance",
    response_model=schemas.MaintenanceOut,
    status_code=201,
    responses=NOT_FOUND,
)
def record_maintenance(
    agent_id: AgentId, body: schemas.MaintenanceIn, request: Request, session: SessionDep
):
    """Record one central run. Pruned archives leave `saveos snapshots`; a tampered result
    raises the agent's `tampered` status, an ok run (a rollback, or a clean prune) clears it."""
    agent = get_agent_or_404(session, agent_id)
    fields = body.model_dump(exclude={"transaction", "state", "findings"})
    run = RepoMaintenance(
        agent_id=agent_id,
        duration_s=round((body.finished_at - body.started_at).total_seconds(), 3),
        transaction_id=body.transaction,
        findings=[f.model_dump() for f in body.findings],
        state=body.state.model_dump() if body.state else None,
        **fields,
    )
    session.add(run)
    if body.pruned:
        session.execute(
            sa.update(Snapshot)
            .where(
                Snapshot.agent_id == agent_id,
                Snapshot.archive.in_(body.pruned),
                Snapshot.pruned_at.is_(None),
            )
            .values(pruned_at=body.finished_at)
        )
    if body.result == "tampered":
        if agent.tampered_at is None:
            agent.tampered_at = body.finished_at
    elif body.result == "ok":
        agent.tampered_at = None
    audit(
        session,
        request,
        "maintenance.record",
        f"agent {agent.id} ({agent.name})",
        {"result": body.result, "pruned": len(body.pruned or [])},
    )
    session.commit()
    return run


@router.post(
    "/agents/{agent_id}/offsite",
    response_model=schemas.ReportAck,
    status_code=201,
    responses={**NOT_FOUND, 200: {"model": schemas.ReportAck, "description": "Replay"}},
)
def record_server_offsite(
    agent_id: AgentId,
    body: schemas.ServerOffsiteReport,
    request: Request,
    response: Response,
    session: SessionDep,
):
    """Record an offsite copy of the agent's repository made by its repository server. Once
    recorded, the server makes this agent's copies: the agent's own offsite reports are refused
    (it holds no S3 credentials, so it cannot vouch for the copy)."""
    agent = get_agent_or_404(session, agent_id)
    existing = session.scalar(
        sa.select(OffsiteSync.id).where(
            OffsiteSync.agent_id == agent_id, OffsiteSync.report_id == body.report_id
        )
    )
    if existing is not None:
        response.status_code = 200
        return schemas.ReportAck(id=existing, duplicate=True)
    row = OffsiteSync(
        agent_id=agent_id, **body.model_dump(exclude={"server", "interval_s", "job_id"})
    )
    session.add(row)
    agent.offsite_server = body.server
    if body.interval_s is not None:
        agent.offsite_interval_s = body.interval_s
    audit(
        session,
        request,
        "offsite.record",
        f"agent {agent.id} ({agent.name})",
        {"result": body.result, "server": body.server},
    )
    session.commit()
    return schemas.ReportAck(id=row.id, duplicate=False)


@router.get(
    "/agents/{agent_id}/maintenance",
    response_model=list[schemas.MaintenanceOut],
    responses=NOT_FOUND,
)
def list_maintenance(
    agent_id: AgentId, session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20
):
    return newest_of_agent(session, RepoMaintenance, agent_id, limit)


@router.get(
    "/agents/{agent_id}/maintenance/state",
    response_model=schemas.MaintenanceState,
    responses=NOT_FOUND,
)
def maintenance_state(
    agent_id: AgentId,
    session: SessionDep,
    repository: Annotated[
        str | None,
        Query(max_length=1024, description="Only archives reported in this repository (URL)"),
    ] = None,
    repo: Annotated[
        str | None,
        Query(max_length=1024, deprecated=True, description="The older name of `repository`"),
    ] = None,
):
    if repository is not None and repo is not None and repository != repo:
        msg = "repo and repository name different repositories: send repository alone"
        raise HTTPException(
            422, detail=[{"loc": ["query", "repo"], "msg": msg, "type": "value_error"}]
        )
    repository = repository if repository is not None else repo
    agent = get_agent_or_404(session, agent_id)
    last_good = session.scalars(
        sa.select(RepoMaintenance)
        .where(RepoMaintenance.agent_id == agent_id, RepoMaintenance.result == "ok")
        .order_by(RepoMaintenance.finished_at.desc(), RepoMaintenance.id.desc())
        .limit(1)
    ).first()
    last_verified = session.scalar(
        sa.select(sa.func.max(RepoMaintenance.finished_at)).where(
            RepoMaintenance.agent_id == agent_id,
            RepoMaintenance.result == "ok",
            RepoMaintenance.verify_data.is_(True),
        )
    )
    where = [
        Snapshot.agent_id == agent_id,
        Snapshot.exit_status.in_(MADE),
        Snapshot.pruned_at.is_(None),
    ]
    if repository is not None:
        where.append(Snapshot.repository == repository)
    made = session.execute(
        sa.select(Snapshot.archive, sa.func.max(Snapshot.finished_at))
        .where(*where)
        .group_by(Snapshot.archive)
    ).all()
    return {
        "agent_id": agent_id,
        "tampered_at": agent.tampered_at,
        "last_maintained_at": last_good.finished_at if last_good else None,
        "last_verify_data_at": last_verified,
        "state": last_good.state if last_good else None,
        "archives_on_record": {name: finished for name, finished in made},
    }
