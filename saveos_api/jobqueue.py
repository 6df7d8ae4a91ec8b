"""Queueing jobs: the one path the API (`POST /api/v1/jobs`) and the dashboard both take."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from saveos_api.models import Agent, Job


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
) -> list[Job]:
    """One queued job per agent, committed; agents hand them out on their next heartbeat."""
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
    session.commit()
    return jobs
