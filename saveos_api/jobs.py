"""Jobs queued for agents: handed out once (queued -> running), expired when too old."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from saveos_api.models import Job


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
