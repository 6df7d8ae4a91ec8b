"""Operator endpoints: provisioning (admin), jobs (operate), inventory and fleet status (read).

Every state-changing call is written to the audit log in the transaction that makes it."""

from __future__ import annotations

from typing import Annotated

import saveos_rules as rules
import sqlalchemy as sa
from fastapi import HTTPException, Path, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from saveos_api import job_params, schedule, schemas
from saveos_api.audit import audit
from saveos_api.auth import hash_token, new_agent_token
from saveos_api.deps import (
    ADMIN,
    NOT_FOUND,
    OPERATE,
    READ,
    AgentId,
    JobId,
    SessionDep,
    admin_router,
    get_agent_or_404,
)
from saveos_api.fleet import fleet_status_json
from saveos_api.jobs import UnknownAgent, expire_jobs, queue_jobs, resolve_agents
from saveos_api.models import Agent, AgentToken, Job, Snapshot, utcnow

router = admin_router("admin", scope=None)  # each route names its scope


def _target(agent: Agent) -> str:
    return f"agent {agent.id} ({agent.name})"


def _issue_token(request: Request, session: Session, agent_id: int) -> str:
    token = new_agent_token()
    session.add(
        AgentToken(agent_id=agent_id, token_hash=hash_token(request.app.state.secret_key, token))
    )
    return token


def _revoke_tokens(session: Session, agent_id: int) -> int:
    result = session.execute(
        sa.update(AgentToken)
        .where(AgentToken.agent_id == agent_id, AgentToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount


def _new_agent(body: schemas.ProvisionIn, settings) -> Agent:
    backup_s = body.backup_interval_s or settings.backup_interval_s
    heartbeat_s = body.heartbeat_interval_s or settings.heartbeat_interval_s
    return Agent(
        name=body.name,
        labels=body.labels or {},
        backup_interval_s=backup_s,
        provisioned_backup_interval_s=backup_s,
        backup_grace_s=body.backup_grace_s
        if body.backup_grace_s is not None
        else settings.backup_grace_s,
        heartbeat_interval_s=heartbeat_s,
        provisioned_heartbeat_interval_s=heartbeat_s,
        heartbeat_count=0,
        **{f: getattr(body, f) for f in schemas.VERIFY_FIELDS},
    )


def _converge_existing(
    request: Request, session: Session, agent: Agent, body: schemas.ProvisionIn
) -> str | None:
    """Apply the declared settings to an existing agent; its new token when one is due (asked
    for, or a decommissioned agent coming back, since all its tokens were revoked)."""
    if body.labels is not None:
        agent.labels = body.labels
    for field in ("backup_grace_s", *schemas.VERIFY_FIELDS):
        if getattr(body, field) is not None:
            setattr(agent, field, getattr(body, field))
    for field in schedule.INTERVALS:
        if getattr(body, field) is not None:
            schedule.provision(agent, field, getattr(body, field))
    token = None
    if body.rotate or agent.decommissioned_at is not None:
        _revoke_tokens(session, agent.id)
        agent.decommissioned_at = None
        token = _issue_token(request, session, agent.id)
    audit(
        session,
        request,
        "agents.provision",
        _target(agent),
        {"created": False, "token_issued": token is not None},
    )
    return token


def _provision_all(
    request: Request, session: Session, bodies: list[schemas.ProvisionIn]
) -> list[schemas.ProvisionOut]:
    """Provision every body in one transaction (idempotent by name); committed on return.
    A concurrent provisioning of one of the names makes it start over once, then 409."""
    settings = request.app.state.settings
    names = [b.name for b in bodies]
    for _attempt in range(2):
        existing = {
            a.name: a for a in session.scalars(sa.select(Agent).where(Agent.name.in_(names)))
        }
        created = {b.name: _new_agent(b, settings) for b in bodies if b.name not in existing}
        session.add_all(created.values())
        try:
            session.flush()
        except IntegrityError:  # a concurrent provision of one of the names won
            session.rollback()
            continue
        out = []
        for body in bodies:
            if body.name in created:
                agent = created[body.name]
                token = _issue_token(request, session, agent.id)
                audit(session, request, "agents.provision", _target(agent), {"created": True})
            else:
                agent = existing[body.name]
                token = _converge_existing(request, session, agent, body)
            out.append(
                schemas.ProvisionOut(
                    id=agent.id, name=agent.name, created=body.name in created, token=token
                )
            )
        session.commit()
        return out
    raise HTTPException(409, detail="an agent of this batch is being provisioned concurrently")


@router.post(
    "/agents/provision",
    response_model=schemas.ProvisionOut,
    status_code=201,
    responses={
        200: {"model": schemas.ProvisionOut, "description": "Existing agent"},
        409: {"description": "Concurrent provisioning of the same name; retry"},
    },
    dependencies=ADMIN,
)
def provision(body: schemas.ProvisionIn, request: Request, response: Response, session: SessionDep):
    """Idempotent by name; a token is returned only when one is created."""
    (out,) = _provision_all(request, session, [body])
    if not out.created:
        response.status_code = 200
    return out


@router.post(
    "/agents/provision-batch",
    response_model=schemas.ProvisionBatchOut,
    responses={409: {"description": "Concurrent provisioning of one of the names; retry"}},
    dependencies=ADMIN,
)
def provision_batch(body: schemas.ProvisionBatchIn, request: Request, session: SessionDep):
    """`/agents/provision` for many agents in one transaction: each one as that call would
    answer it, in the order given (the role provisions a whole play batch at once)."""
    return {"agents": _provision_all(request, session, body.agents)}


@router.get("/agents", response_model=schemas.AgentList, dependencies=READ)
def list_agents(
    session: SessionDep,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
):
    """Agents by name; a page of them with `limit`/`offset` (`total` counts them all)."""
    query = sa.select(Agent).order_by(Agent.name, Agent.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    agents = session.scalars(query).all()
    total = session.scalar(sa.select(sa.func.count()).select_from(Agent))
    return {"agents": agents, "total": total}


@router.get(
    "/agents/by-name/{name}",
    response_model=schemas.AgentOut,
    responses=NOT_FOUND,
    dependencies=READ,
)
def agent_by_name(name: Annotated[str, Path(pattern=rules.NAME_PATTERN)], session: SessionDep):
    agent = session.scalars(sa.select(Agent).where(Agent.name == name)).first()
    if agent is None:
        raise HTTPException(404, detail=f"agent {name!r} not found")
    return agent


@router.get(
    "/agents/{agent_id}", response_model=schemas.AgentOut, responses=NOT_FOUND, dependencies=READ
)
def get_agent(agent_id: AgentId, session: SessionDep):
    return get_agent_or_404(session, agent_id)


@router.get(
    "/agents/{agent_id}/snapshots",
    response_model=schemas.SnapshotPage,
    responses=NOT_FOUND,
    dependencies=READ,
)
def agent_snapshots(
    agent_id: AgentId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    include_pruned: Annotated[
        bool, Query(description="Also the archives a central prune removed")
    ] = False,
):
    get_agent_or_404(session, agent_id)
    where = [Snapshot.agent_id == agent_id]
    if not include_pruned:
        where.append(Snapshot.pruned_at.is_(None))
    rows = session.scalars(
        sa.select(Snapshot)
        .where(*where)
        .order_by(Snapshot.finished_at.desc(), Snapshot.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    total = session.scalar(sa.select(sa.func.count()).select_from(Snapshot).where(*where))
    return {"snapshots": rows, "total": total}


@router.post(
    "/agents/{agent_id}/tokens/revoke",
    response_model=schemas.RevokeOut,
    responses=NOT_FOUND,
    dependencies=ADMIN,
)
def revoke_tokens(agent_id: AgentId, request: Request, session: SessionDep):
    agent = get_agent_or_404(session, agent_id)
    revoked = _revoke_tokens(session, agent_id)
    audit(session, request, "agents.revoke_tokens", _target(agent), {"revoked": revoked})
    session.commit()
    return {"revoked": revoked}


@router.delete(
    "/agents/{agent_id}",
    response_model=schemas.DecommissionOut,
    responses=NOT_FOUND,
    dependencies=ADMIN,
)
def decommission(agent_id: AgentId, request: Request, session: SessionDep):
    agent = get_agent_or_404(session, agent_id)
    if agent.decommissioned_at is None:
        agent.decommissioned_at = utcnow()
    revoked = _revoke_tokens(session, agent_id)
    audit(session, request, "agents.decommission", _target(agent), {"revoked": revoked})
    session.commit()
    return {"id": agent.id, "decommissioned_at": agent.decommissioned_at}


@router.post("/jobs", response_model=schemas.JobsOut, status_code=201, dependencies=OPERATE)
def create_jobs(body: schemas.JobsIn, request: Request, session: SessionDep):
    params = job_params.validate(body.kind, body.params)
    try:
        targets = resolve_agents(session, body.agents)
    except UnknownAgent as exc:
        raise HTTPException(
            422,
            detail=[{"loc": ["body", "agents", exc.index], "msg": str(exc), "type": "value_error"}],
        ) from None
    # Who asked is the token, whatever the client calls itself (kept as its note).
    principal = request.state.principal
    jobs = queue_jobs(session, body.kind, targets, params, principal.actor, commit=False)
    audit(
        session,
        request,
        f"jobs.{body.kind}",
        ",".join(str(t) for t in targets),
        {"jobs": [j.id for j in jobs], "params": params, "note": body.requested_by},
    )
    session.commit()
    return {"jobs": jobs}


@router.get("/jobs/{job_id}", response_model=schemas.JobOut, responses=NOT_FOUND, dependencies=READ)
def get_job(job_id: JobId, request: Request, session: SessionDep):
    if expire_jobs(session, utcnow(), request.app.state.settings.job_timeout_s, job_id):
        session.commit()
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, detail=f"job {job_id} not found")
    return job


@router.get("/fleet/status", response_model=schemas.FleetStatusOut, dependencies=READ)
def get_fleet_status(
    session: SessionDep,
    at: Annotated[
        schemas.Instant | None,
        Query(description="Evaluate the status as of this instant (ISO 8601 with timezone)"),
    ] = None,
):
    # Already shaped like FleetStatusOut (schemathesis checks that); skip re-validating 10k rows.
    return Response(fleet_status_json(session, at or utcnow()), media_type="application/json")
