"""Jobs queued for agents: queued (the one path of the API and the dashboard), handed out once
(queued -> running), expired when too old."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from saveos_agent.job_params import validate as validate_params
from sqlalchemy.orm import Session

from saveos_api.models import Agent, Job


def expire_jobs(
    session, now, timeout_s: int, job_id: int | None = None, skip_locked: bool = False
) -> int:
    """Mark jobs queued or running for longer than the timeout as expired (conditional UPDATE).

    skip_locked (PostgreSQL): leave the jobs other transactions hold to the next run."""
    stale = sa.and_(
        Job.state.in_(("queued", "running")),
        Job.created_at < now - timedelta(seconds=timeout_s),
    )
    if job_id is not None:
        stale = sa.and_(stale, Job.id == job_id)
    if skip_locked:
        locked = sa.select(Job.id).where(stale).with_for_update(skip_locked=True, key_share=True)
        stale = Job.id.in_(locked.scalar_subquery())
    return session.execute(
        sa.update(Job).where(stale).values(state="expired", finished_at=now)
    ).rowcount


def hand_out_jobs(
    conn, agent_ids: list[int], now: datetime, timeout_s: int
) -> dict[int, list[dict[str, Any]]]:
    """Start the queued jobs of these agents (one conditional UPDATE): per agent, in id order."""
    jobs = conn.execute(
        sa.update(Job)
        .where(
            Job.agent_id.in_(agent_ids),
            Job.state == "queued",
            # Stale jobs are never started, even between two expiry runs.
            Job.created_at >= now - timedelta(seconds=timeout_s),
        )
        .values(state="running", started_at=now)
        .returning(Job.id, Job.agent_id, Job.kind, Job.params)
    ).all()
    by_agent: dict[int, list[dict[str, Any]]] = {}
    for job in sorted(jobs):
        by_agent.setdefault(job.agent_id, []).append(
            {"id": job.id, "kind": job.kind, "params": job.params}
        )
    return by_agent


class UnknownAgent(Exception):
    """The `index`-th reference names no live agent."""

    def __init__(self, index: int, ref: int | str):
        super().__init__(f"unknown or decommissioned agent {ref!r}")
        self.index, self.ref = index, ref


def resolve_agents(session: Session, refs: list[int | str]) -> list[int]:
    """Agent ids for ids or names, in the order given, without repeats; UnknownAgent if any
    reference is unknown or decommissioned."""
    ids = [ref for ref in refs if isinstance(ref, int)]
    names = [ref for ref in refs if isinstance(ref, str)]
    found = session.execute(
        sa.select(Agent.id, Agent.name, Agent.decommissioned_at).where(
            sa.or_(Agent.id.in_(ids), Agent.name.in_(names))
        )
    ).all()
    by_id = {row.id: row for row in found}
    by_name = {row.name: row for row in found}
    targets: list[int] = []
    for index, ref in enumerate(refs):
        row = by_id.get(ref) if isinstance(ref, int) else by_name.get(ref)
        if row is None or row.decommissioned_at is not None:
            raise UnknownAgent(index, ref)
        if row.id not in targets:
            targets.append(row.id)
    return targets


def agents_with_label(session: Session, key: str, value: str) -> list[int]:
    """Live agents whose label `key` is `value`, by name."""
    return list(
        session.scalars(
            sa.select(Agent.id)
            .where(Agent.labels[key].as_string() == value, Agent.decommissioned_at.is_(None))
            .order_by(Agent.name)
        )
    )


def queue_jobs(
    session: Session,
    kind: str,
    agent_ids: list[int],
    params: dict[str, Any] | None,
    requested_by: str | None,
    commit: bool = True,
) -> list[Job]:
    """One queued job per agent, committed (or flushed, for the caller to audit and commit);
    agents hand them out on their next heartbeat. The parameters must pass the kind's
    allow-list (saveos_agent/job_params.py: JobParamError otherwise), whoever queues them."""
    params = validate_params(kind, params)
    jobs = [
        Job(
            agent_id=agent_id,
            kind=kind,
            state="queued",
            params=params or {},
            requested_by=requested_by,
        )
        for agent_id in agent_ids
    ]
    session.add_all(jobs)
    if commit:
        session.commit()
    else:
        session.flush()
    return jobs
