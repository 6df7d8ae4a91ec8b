"""SQLite (and any other dialect): a batch of heartbeats as a few Core statements in one
transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException

from saveos_api import schedule
from saveos_api.auth import (
    agent_refusal,
    agent_token_hash,
    live_agent_token,
    touch_agent_tokens,
)
from saveos_api.heartbeats.batch import AGENT_FIELDS, COLUMN, TRIM_EVERY, Beat
from saveos_api.jobs import expire_jobs, hand_out_jobs
from saveos_api.models import Agent, AgentToken, Heartbeat, utcnow


def write(
    state, conn: sa.Connection, batch: list[Beat], expire: bool
) -> list[dict[str, Any] | HTTPException]:
    hashes = {b.token: agent_token_hash(state.secret_key, b.token) for b in batch}
    now = utcnow()
    with conn.begin():
        # Authenticated in the transaction that writes: a revoked token fails at once.
        rows = conn.execute(
            sa.select(
                AgentToken.id.label("token_id"),
                AgentToken.token_hash,
                AgentToken.last_used_at,
                Agent.id,
                Agent.heartbeat_count,
                *(getattr(Agent, COLUMN[f]).label(f) for f in AGENT_FIELDS),
                *(getattr(Agent, f"provisioned_{f}") for f in schedule.INTERVALS),
                *(getattr(Agent, f).label(f"effective_{f}") for f in schedule.INTERVALS),
            )
            .join(Agent, Agent.id == AgentToken.agent_id)
            .where(AgentToken.token_hash.in_(set(hashes.values()) - {None}), live_agent_token())
        ).all()
        by_hash = {row.token_hash: row for row in rows}
        results: list[Any] = []
        accepted: list[tuple[int, Any, Beat]] = []
        for beat in batch:
            row = by_hash.get(hashes[beat.token])
            if row is None:
                results.append(agent_refusal(state, beat.token))
            else:
                results.append(None)
                accepted.append((len(results) - 1, row, beat))
        if not accepted:
            return results

        # Several beats of one agent in a batch still count (and are stored) separately.
        extra: dict[int, int] = {}
        # Per agent, the latest non-null value of each declared field (as on PostgreSQL).
        declared: dict[int, dict[str, Any]] = {}
        for _, row, beat in accepted:
            extra[row.id] = extra.get(row.id, 0) + 1
            values = beat.body.model_dump(include=set(AGENT_FIELDS), exclude_none=True)
            declared.setdefault(row.id, {}).update(values)
        agents = {row.id: row for _, row, _ in accepted}  # one row per agent
        # Declared fields change rarely: write them only when they differ.
        changed = {
            row.id: diff
            for row in agents.values()
            if (diff := {k: v for k, v in declared[row.id].items() if getattr(row, k) != v})
        }
        agent_ids = sorted(extra)
        conn.execute(
            sa.update(Agent)
            .where(Agent.id.in_(agent_ids))
            .values(last_heartbeat_at=now, heartbeat_count=Agent.heartbeat_count + 1)
        )
        for agent_id, values in changed.items():
            row = agents[agent_id]
            update = {COLUMN[k]: v for k, v in values.items()}
            for f in schedule.INTERVALS:
                if f in values:  # the effective interval: only ever stricter than provisioned
                    provisioned = getattr(row, f"provisioned_{f}") or getattr(row, f"effective_{f}")
                    update[f] = schedule.effective(provisioned, values[f])
            conn.execute(sa.update(Agent).where(Agent.id == agent_id).values(**update))
        for agent_id, n in extra.items():
            if n > 1:
                conn.execute(
                    sa.update(Agent)
                    .where(Agent.id == agent_id)
                    .values(heartbeat_count=Agent.heartbeat_count + (n - 1))
                )
        conn.execute(
            sa.insert(Heartbeat),
            [
                {
                    "agent_id": row.id,
                    "received_at": now,
                    "agent_version": beat.body.agent_version,
                    "borg_version": beat.body.borg_version,
                    "os": beat.body.os,
                    "facts": beat.body.facts,
                }
                for _, row, beat in accepted
            ],
        )
        keep = state.settings.heartbeat_history
        for row in agents.values():
            count = row.heartbeat_count + extra[row.id]
            if count // TRIM_EVERY > row.heartbeat_count // TRIM_EVERY:
                _trim(conn, row.id, keep)
        touch_agent_tokens(conn, [(row.token_id, row.last_used_at) for row in rows], now)
        timeout_s = state.settings.job_timeout_s
        if expire:
            expire_jobs(conn, now, timeout_s)
        by_agent = hand_out_jobs(conn, agent_ids, now, timeout_s)

    for index, row, _ in accepted:
        # Jobs go to the first of an agent's beats in the batch, and only once.
        results[index] = {
            "agent_id": row.id,
            "server_time": now,
            "jobs": by_agent.pop(row.id, []),
        }
    return results


def _trim(session, agent_id: int, keep: int) -> None:
    oldest_kept = (
        sa.select(Heartbeat.received_at)
        .where(Heartbeat.agent_id == agent_id)
        .order_by(Heartbeat.received_at.desc())
        .limit(1)
        .offset(keep - 1)
        .scalar_subquery()
    )
    session.execute(
        sa.delete(Heartbeat).where(
            Heartbeat.agent_id == agent_id, Heartbeat.received_at < oldest_kept
        )
    )
