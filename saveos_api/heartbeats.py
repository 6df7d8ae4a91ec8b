"""Group commit for heartbeats: every request waiting at a moment is written in one transaction.

A single writer task per process drains the queue, authenticates the whole batch with one
SELECT, updates agents, inserts the heartbeat rows in one multi-row INSERT, hands out queued
jobs with one conditional UPDATE ... RETURNING, commits, and only then answers each request.
Under load, batches grow and the per-heartbeat cost shrinks; idle, a batch is one heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from saveos_api.auth import (
    AGENT_TOKEN_RE,
    LAST_USED_RESOLUTION,
    forbidden,
    hash_token,
    is_admin_token,
    unauthorized,
)
from saveos_api.models import Agent, AgentToken, Heartbeat, Job, utcnow
from saveos_api.schemas import HeartbeatIn

log = logging.getLogger("saveos_api.heartbeats")
MAX_BATCH = 512
EXPIRY_EVERY = timedelta(seconds=60)
# Trimming the bounded history on every Nth beat of an agent keeps the hot path to inserts.
TRIM_EVERY = 32
# Heartbeat fields that overwrite the agent row (the agent's own declaration wins).
AGENT_FIELDS = (
    "agent_version",
    "borg_version",
    "os",
    "hostname",
    "facts",
    "backup_interval_s",
    "heartbeat_interval_s",
    "offsite_interval_s",
)


@dataclass
class _Beat:
    token: str
    body: HeartbeatIn
    future: asyncio.Future = field(repr=False)


class HeartbeatWriter:
    def __init__(self, app_state: Any):
        self.state = app_state
        self.queue: asyncio.Queue[_Beat] | None = None
        self.task: asyncio.Task | None = None
        self.next_expiry: datetime | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run(), name="saveos-heartbeat-writer")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.task = None

    async def submit(self, token: str, body: HeartbeatIn) -> dict[str, Any]:
        if (
            self.task is None
            or self.task.done()
            or self.task.get_loop() is not asyncio.get_running_loop()
        ):
            # The lifespan did not run on this loop (e.g. a TestClient used without `with`).
            await self.start()
        beat = _Beat(token, body, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(beat)
        return await beat.future

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.state.metrics.heartbeat_batch.observe(len(batch))
            try:
                try:
                    results = await run_in_threadpool(self._write, batch)
                except OperationalError:
                    # E.g. a deadlock with another worker's batch on the same agents: the
                    # transaction was rolled back as a whole, so running it again is safe.
                    results = await run_in_threadpool(self._write, batch)
            except Exception as exc:  # noqa: BLE001 - answer every waiter, keep the writer alive
                log.error("heartbeat batch of %d failed: %s", len(batch), exc)
                results = [HTTPException(503, detail="database unavailable")] * len(batch)
            for beat, result in zip(batch, results, strict=True):
                if beat.future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    beat.future.set_exception(result)
                else:
                    beat.future.set_result(result)

    def _write(self, batch: list[_Beat]) -> list[dict[str, Any] | HTTPException]:
        state = self.state
        hashes = {
            b.token: hash_token(state.secret_key, b.token)
            for b in batch
            if AGENT_TOKEN_RE.match(b.token)
        }
        now = utcnow()
        with state.db.sessions() as session:
            rows = session.execute(
                sa.select(
                    AgentToken.id.label("token_id"),
                    AgentToken.token_hash,
                    AgentToken.last_used_at,
                    Agent.id,
                    Agent.heartbeat_count,
                    *(getattr(Agent, f) for f in AGENT_FIELDS),
                )
                .join(Agent, Agent.id == AgentToken.agent_id)
                .where(
                    AgentToken.token_hash.in_(set(hashes.values())),
                    AgentToken.revoked_at.is_(None),
                    Agent.decommissioned_at.is_(None),
                )
            ).all()
            by_hash = {row.token_hash: row for row in rows}
            results: list[Any] = []
            accepted: list[tuple[int, _Beat]] = []
            for beat in batch:
                row = by_hash.get(hashes.get(beat.token, ""))
                if row is None:
                    results.append(
                        forbidden("this endpoint takes an agent token, not the admin token")
                        if is_admin_token(state, beat.token)
                        else unauthorized("invalid or revoked agent token")
                    )
                else:
                    results.append(None)
                    accepted.append((len(results) - 1, beat))
            if not accepted:
                return results

            agent_ids = sorted({by_hash[hashes[b.token]].id for _, b in accepted})
            session.execute(
                sa.update(Agent)
                .where(Agent.id.in_(agent_ids))
                .values(last_seen=now, heartbeat_count=Agent.heartbeat_count + 1)
            )
            # Declared fields change rarely: write them only when they differ.
            changed: dict[int, dict[str, Any]] = {}
            for _, beat in accepted:
                row = by_hash[hashes[beat.token]]
                declared = beat.body.model_dump(include=set(AGENT_FIELDS), exclude_none=True)
                diff = {k: v for k, v in declared.items() if getattr(row, k) != v}
                if diff:
                    changed.setdefault(row.id, {}).update(diff)
            for agent_id, values in changed.items():
                session.execute(sa.update(Agent).where(Agent.id == agent_id).values(**values))
            # Several beats of one agent in a batch still count (and are stored) separately.
            extra = {agent_id: 0 for agent_id in agent_ids}
            counts: dict[int, int] = {}
            for _, beat in accepted:
                agent_id = by_hash[hashes[beat.token]].id
                extra[agent_id] += 1
                counts[agent_id] = by_hash[hashes[beat.token]].heartbeat_count + extra[agent_id]
            for agent_id, n in extra.items():
                if n > 1:
                    session.execute(
                        sa.update(Agent)
                        .where(Agent.id == agent_id)
                        .values(heartbeat_count=Agent.heartbeat_count + (n - 1))
                    )
            session.execute(
                sa.insert(Heartbeat),
                [
                    {
                        "agent_id": by_hash[hashes[b.token]].id,
                        "received_at": now,
                        "agent_version": b.body.agent_version,
                        "borg_version": b.body.borg_version,
                        "os": b.body.os,
                        "facts": b.body.facts,
                    }
                    for _, b in accepted
                ],
            )
            keep = state.settings.heartbeat_history
            for agent_id, count in counts.items():
                if count // TRIM_EVERY > (count - extra[agent_id]) // TRIM_EVERY:
                    _trim(session, agent_id, keep)
            stale = [
                row.token_id
                for row in rows
                if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION
            ]
            if stale:
                session.execute(
                    sa.update(AgentToken).where(AgentToken.id.in_(stale)).values(last_used_at=now)
                )
            if self.next_expiry is None or now >= self.next_expiry:
                # Before handing out jobs, so a stale one is never started.
                expire_jobs(session, now, state.settings.job_timeout_s)
                self.next_expiry = now + EXPIRY_EVERY
            jobs = session.execute(
                sa.update(Job)
                .where(Job.agent_id.in_(agent_ids), Job.state == "queued")
                .values(state="running", started_at=now)
                .returning(Job.id, Job.agent_id, Job.kind, Job.params)
            ).all()
            session.commit()

        by_agent: dict[int, list[dict[str, Any]]] = {}
        for job in sorted(jobs):
            by_agent.setdefault(job.agent_id, []).append(
                {"id": job.id, "kind": job.kind, "params": job.params}
            )
        for index, beat in accepted:
            agent_id = by_hash[hashes[beat.token]].id
            # Jobs go to the first of an agent's beats in the batch, and only once.
            results[index] = {
                "agent_id": agent_id,
                "server_time": now,
                "jobs": by_agent.pop(agent_id, []),
            }
        return results


def expire_jobs(session, now, timeout_s: int, job_id: int | None = None) -> int:
    """Mark jobs queued or running for longer than the timeout as expired (conditional UPDATE)."""
    query = sa.update(Job).where(
        Job.state.in_(("queued", "running")),
        Job.created_at < now - timedelta(seconds=timeout_s),
    )
    if job_id is not None:
        query = query.where(Job.id == job_id)
    return session.execute(query.values(state="expired", finished_at=now)).rowcount


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
