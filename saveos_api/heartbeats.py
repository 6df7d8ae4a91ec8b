"""Group commit for heartbeats: every request waiting at a moment is written in one transaction.

Writer lanes (one on SQLite, PG_LANES on PostgreSQL) each drain a queue of their own; a beat
goes to the lane its token hashes to, so one agent's rows are only ever written by one lane
and concurrent batches never wait for (or deadlock on) each other's row locks. A lane
authenticates the whole batch with one SELECT, updates agents, inserts the heartbeat rows in
one multi-row INSERT, hands out queued jobs with one conditional UPDATE ... RETURNING,
commits, and only then answers each request (on PostgreSQL all of it is one statement).
Under load, batches grow and the per-heartbeat cost shrinks; idle, a batch is one heartbeat.
Each lane keeps one connection of its own and uses it from one thread of its own, so a
batch costs no pool checkout, no liveness ping and no thread-pool handoff.

`HeartbeatFastPath` answers the ordinary heartbeat (a bearer token, a valid JSON body) as a
plain ASGI handler in front of FastAPI's routing, dependency injection and response-model
machinery, which cost more CPU than the whole batched write. Anything else (no or malformed
token, invalid body, another content type) goes on to the FastAPI route, which answers it
exactly as before; the route also documents the endpoint in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from saveos_api.auth import (
    AGENT_TOKEN_RE,
    LAST_USED_RESOLUTION,
    NOT_AN_AGENT_TOKEN,
    bearer_token,
    forbidden,
    hash_token,
    is_api_token,
    unauthorized,
)
from saveos_api.models import Agent, AgentToken, Heartbeat, Job, utcnow
from saveos_api.schemas import HeartbeatIn

log = logging.getLogger("saveos_api.heartbeats")
MAX_BATCH = 512
PG_LANES = 2
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


class _Lane:
    """One writer: its own queue, thread and connection (only ever used from that thread)."""

    def __init__(self, name: str):
        self.queue: asyncio.Queue[_Beat] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: sa.Connection | None = None
        self.task: asyncio.Task | None = None

    def disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.invalidate()  # its session settings must not go back to the pool
                self.conn.close()
            self.conn = None


class HeartbeatWriter:
    def __init__(self, app_state: Any):
        self.state = app_state
        self.lanes: list[_Lane] = []
        self.next_expiry: datetime | None = None

    async def start(self) -> None:
        await self.stop()
        # On PostgreSQL, PG_LANES batches may be in the database at once: while one waits for
        # its commit (WAL flush, a busy CPU), the next one is written. SQLite has one writer.
        lanes = 1 if self.state.db.is_sqlite else PG_LANES
        for i in range(lanes):
            lane = _Lane(f"saveos-heartbeats-{i}")
            lane.task = asyncio.create_task(self._run(lane), name=f"saveos-heartbeat-writer-{i}")
            self.lanes.append(lane)

    async def stop(self) -> None:
        lanes, self.lanes = self.lanes, []
        loop = asyncio.get_running_loop()
        for lane in lanes:
            if lane.task.get_loop() is not loop:
                # Left behind by another event loop (a TestClient used without `with`).
                lane.executor.shutdown(wait=False)
                continue
            lane.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lane.task
            await loop.run_in_executor(lane.executor, lane.disconnect)
            lane.executor.shutdown()

    def _write_batch(
        self, lane: _Lane, batch: list[_Beat], expire: bool
    ) -> list[dict[str, Any] | HTTPException]:
        """Runs in the lane's thread. A broken connection is dropped, so the retry (and the
        next batch) connects afresh instead of failing on a connection that is gone."""
        try:
            if lane.conn is None:
                lane.conn = self.state.db.engine.connect()
                if lane.conn.dialect.name == "postgresql":
                    # One statement per batch: atomic on its own, no BEGIN/COMMIT round trips.
                    lane.conn = lane.conn.execution_options(isolation_level="AUTOCOMMIT")
                    # Planned once per connection: planning the statement costs more than
                    # executing it for a small batch. The session is the writer's alone and is
                    # closed for good, never pooled, when the lane stops (see disconnect).
                    lane.conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
                    # A plan made while the tables are tiny would scan `agents` for every beat,
                    # and under a heartbeat load that table is mostly dead row versions.
                    lane.conn.exec_driver_sql("SET enable_seqscan = off")
                    lane.conn.exec_driver_sql(PG_PREPARE)
                    lane.conn.commit()
            if lane.conn.dialect.name == "postgresql":
                return self._write_pg(lane.conn, batch, expire)
            return self._write(lane.conn, batch, expire)
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                lane.disconnect()
            raise
        except sa.exc.SQLAlchemyError:
            lane.disconnect()
            raise

    async def submit(self, token: str, body: HeartbeatIn) -> dict[str, Any]:
        if not self.lanes or any(
            lane.task.done() or lane.task.get_loop() is not asyncio.get_running_loop()
            for lane in self.lanes
        ):
            # The lifespan did not run on this loop (e.g. a TestClient used without `with`).
            await self.start()
        beat = _Beat(token, body, asyncio.get_running_loop().create_future())
        # hash() is stable for the life of the process, which is all the routing needs.
        self.lanes[hash(token) % len(self.lanes)].queue.put_nowait(beat)
        return await beat.future

    async def _run(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await lane.queue.get()]
            while len(batch) < MAX_BATCH and not lane.queue.empty():
                batch.append(lane.queue.get_nowait())
            self.state.metrics.heartbeat_batch.observe(len(batch))
            # Decided here, on the event loop, so one lane expires jobs per period.
            now = utcnow()
            expire = self.next_expiry is None or now >= self.next_expiry
            if expire:
                self.next_expiry = now + EXPIRY_EVERY
            try:
                try:
                    results = await loop.run_in_executor(
                        lane.executor, self._write_batch, lane, batch, expire
                    )
                except OperationalError as exc:
                    # E.g. a dropped connection, or a deadlock with an admin transaction: the
                    # transaction was rolled back as a whole, so running it again (on a fresh
                    # connection if need be) is safe.
                    log.warning("heartbeat batch of %d failed, retrying: %s", len(batch), exc)
                    results = await loop.run_in_executor(
                        lane.executor, self._write_batch, lane, batch, expire
                    )
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

    def _write_pg(
        self, conn: sa.Connection, batch: list[_Beat], expire: bool
    ) -> list[dict[str, Any] | HTTPException]:
        """PostgreSQL: the whole batch in ONE prepared statement (PG_BATCH): one round trip."""
        state = self.state
        now = utcnow()
        if expire:
            # Skips the jobs another lane's batch is handing out (its statement does not hand
            # out stale ones anyway), so it never waits for, nor deadlocks with, a batch.
            expire_jobs(conn, now, state.settings.job_timeout_s, skip_locked=True)
            conn.commit()
        columns: dict[str, list[Any]] = {name: [] for name in ("hash", *AGENT_FIELDS)}
        for beat in batch:
            token = beat.token
            columns["hash"].append(
                hash_token(state.secret_key, token) if AGENT_TOKEN_RE.match(token) else None
            )
            body = beat.body
            for name in AGENT_FIELDS:
                columns[name].append(getattr(body, name))
        columns["facts"] = [None if f is None else json.dumps(f) for f in columns["facts"]]
        rows = conn.exec_driver_sql(
            PG_EXECUTE,
            {
                **columns,
                "now": now,
                "stale_before": now - LAST_USED_RESOLUTION,
                "job_cutoff": now - timedelta(seconds=state.settings.job_timeout_s),
                "keep": state.settings.heartbeat_history,
                "trim_every": TRIM_EVERY,
            },
        ).all()
        conn.commit()  # a no-op round-trip-wise in autocommit mode; ends SQLAlchemy's autobegin
        agent_of: dict[int, int] = {}
        by_agent: dict[int, list[dict[str, Any]]] = {}
        for n, agent_id, job_id, kind, params in sorted(rows, key=_job_order):
            if job_id is None:
                agent_of[n - 1] = agent_id
            else:
                by_agent.setdefault(agent_id, []).append(
                    {"id": job_id, "kind": kind, "params": params}
                )
        results: list[dict[str, Any] | HTTPException] = []
        for index, beat in enumerate(batch):
            agent_id = agent_of.get(index)
            if agent_id is None:
                results.append(_refusal(state, beat.token))
            else:
                # Jobs go to the first of an agent's beats in the batch, and only once.
                results.append(
                    {"agent_id": agent_id, "server_time": now, "jobs": by_agent.pop(agent_id, [])}
                )
        return results

    def _write(
        self, conn: sa.Connection, batch: list[_Beat], expire: bool
    ) -> list[dict[str, Any] | HTTPException]:
        """Portable (SQLite): a few Core statements in one transaction."""
        state = self.state
        hashes = {
            b.token: hash_token(state.secret_key, b.token)
            for b in batch
            if AGENT_TOKEN_RE.match(b.token)
        }
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
            accepted: list[tuple[int, Any, _Beat]] = []
            for beat in batch:
                row = by_hash.get(hashes.get(beat.token, ""))
                if row is None:
                    results.append(_refusal(state, beat.token))
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
                .values(last_seen=now, heartbeat_count=Agent.heartbeat_count + 1)
            )
            for agent_id, values in changed.items():
                conn.execute(sa.update(Agent).where(Agent.id == agent_id).values(**values))
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
            stale = [
                row.token_id
                for row in rows
                if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION
            ]
            if stale:
                conn.execute(
                    sa.update(AgentToken).where(AgentToken.id.in_(stale)).values(last_used_at=now)
                )
            timeout_s = state.settings.job_timeout_s
            if expire:
                expire_jobs(conn, now, timeout_s)
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
        for index, row, _ in accepted:
            # Jobs go to the first of an agent's beats in the batch, and only once.
            results[index] = {
                "agent_id": row.id,
                "server_time": now,
                "jobs": by_agent.pop(row.id, []),
            }
        return results


def _refusal(state, token: str) -> HTTPException:
    if is_api_token(state, token):
        return forbidden(NOT_AN_AGENT_TOKEN)
    return unauthorized("invalid or revoked agent token")


def _job_order(row) -> tuple:
    # Beats first, then jobs by id (each agent's jobs in the order they were queued).
    return (row[2] is not None, row[2] or 0)


# The PostgreSQL batch: authenticate every beat (live token, agent not decommissioned),
# update each agent once (count, last_seen, declared fields: the latest non-null value wins),
# insert every beat, trim the bounded history of agents that crossed a TRIM_EVERY boundary,
# refresh stale last_used_at, and hand out the queued jobs that have not timed out. All data-
# modifying CTEs see one snapshot and commit together. Returns one row per accepted beat
# (n = its 1-based position in the batch) and one row per job handed out.
PG_BATCH = """
WITH b AS (
    SELECT * FROM unnest(
        %(hash)s::text[], %(agent_version)s::text[], %(borg_version)s::text[], %(os)s::text[],
        %(hostname)s::text[], %(facts)s::text[], %(backup_interval_s)s::int[],
        %(heartbeat_interval_s)s::int[], %(offsite_interval_s)s::int[]
    ) WITH ORDINALITY AS b(token_hash, agent_version, borg_version, os, hostname, facts,
                           backup_interval_s, heartbeat_interval_s, offsite_interval_s, n)
), auth AS (
    -- LATERAL: one index probe per beat, whatever the plan (also the prepared generic one).
    SELECT b.*, x.token_id, x.last_used_at, x.agent_id, x.heartbeat_count
    FROM b CROSS JOIN LATERAL (
        SELECT t.id AS token_id, t.last_used_at, a.id AS agent_id, a.heartbeat_count
        FROM agent_tokens t JOIN agents a ON a.id = t.agent_id
        WHERE t.token_hash = b.token_hash AND t.revoked_at IS NULL
            AND a.decommissioned_at IS NULL
        OFFSET 0  -- keeps the planner from flattening the LATERAL into a join over all tokens
    ) x
), per_agent AS (
    SELECT agent_id, min(heartbeat_count) AS count_before, count(*) AS beats,
        {latest}
    FROM auth GROUP BY agent_id
    -- In id order, so that every batch (also another worker process's) locks its agents'
    -- rows in the same order.
    ORDER BY agent_id
), upd AS (
    UPDATE agents a SET
        last_seen = %(now)s,
        heartbeat_count = a.heartbeat_count + p.beats,
        {declared}
    FROM per_agent p WHERE a.id = p.agent_id
), ins AS (
    INSERT INTO heartbeats (agent_id, received_at, agent_version, borg_version, os, facts)
    SELECT agent_id, %(now)s, agent_version, borg_version, os, facts::json FROM auth ORDER BY n
), trimmed AS (
    DELETE FROM heartbeats h USING (
        -- This statement does not see its own inserts: the batch's beats are kept first.
        SELECT p.agent_id, CASE WHEN p.beats >= %(keep)s THEN %(now)s ELSE (
            SELECT x.received_at FROM heartbeats x WHERE x.agent_id = p.agent_id
            ORDER BY x.received_at DESC LIMIT 1 OFFSET %(keep)s - p.beats - 1
        ) END AS cutoff
        FROM per_agent p
        WHERE (p.count_before + p.beats) / %(trim_every)s > p.count_before / %(trim_every)s
    ) c
    WHERE h.agent_id = c.agent_id AND h.received_at < c.cutoff
), used AS (
    UPDATE agent_tokens t SET last_used_at = %(now)s
    WHERE t.id IN (
        SELECT token_id FROM auth WHERE last_used_at IS NULL OR last_used_at < %(stale_before)s
    )
), handed AS (
    UPDATE jobs j SET state = 'running', started_at = %(now)s
    -- = ANY(ARRAY(...)): an index condition on agent_id whatever the statistics (not a walk
    -- of every job's index entry), taking the agents in id order like upd.
    WHERE j.agent_id = ANY (ARRAY(SELECT agent_id FROM per_agent)) AND j.state = 'queued'
        AND j.created_at >= %(job_cutoff)s
    RETURNING j.id, j.agent_id, j.kind, j.params
)
SELECT n, agent_id, NULL::bigint AS job_id, NULL::text AS kind, NULL::json AS params FROM auth
UNION ALL
SELECT NULL, agent_id, id, kind, params FROM handed
""".format(  # noqa: S608 - only the constant AGENT_FIELDS names go in; values are bound
    latest=",\n        ".join(
        f"(array_agg({f} ORDER BY n DESC) FILTER (WHERE {f} IS NOT NULL))[1] AS {f}"
        for f in AGENT_FIELDS
    ),
    declared=",\n        ".join(
        f"{f} = COALESCE(p.{f}{'::json' if f == 'facts' else ''}, a.{f})" for f in AGENT_FIELDS
    ),
)

# The batch as a prepared statement: its parameters, with their types, in $n order.
PG_PARAMS = {
    "hash": "text[]",
    "agent_version": "text[]",
    "borg_version": "text[]",
    "os": "text[]",
    "hostname": "text[]",
    "facts": "text[]",
    "backup_interval_s": "int[]",
    "heartbeat_interval_s": "int[]",
    "offsite_interval_s": "int[]",
    "now": "timestamptz",
    "stale_before": "timestamptz",
    "job_cutoff": "timestamptz",
    "keep": "int",
    "trim_every": "int",
}
PG_PREPARE = "PREPARE saveos_heartbeats ({}) AS {}".format(
    ", ".join(PG_PARAMS.values()),
    re.sub(r"%\((\w+)\)s", lambda m: f"${list(PG_PARAMS).index(m.group(1)) + 1}", PG_BATCH),
)
PG_EXECUTE = "EXECUTE saveos_heartbeats ({})".format(
    ", ".join(f"%({name})s::{kind}" for name, kind in PG_PARAMS.items())
)


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


HEARTBEAT_PATH = "/api/v1/agents/heartbeat"


@dataclass(frozen=True)
class _RouteLabel:
    """What MetricsMiddleware reads from scope["route"] (the route template)."""

    path: str


class HeartbeatFastPath:
    """Pure ASGI: the ordinary heartbeat goes straight to the writer; the rest to FastAPI.

    It answers only a POST with a well-formed bearer token and a JSON body that validates as
    HeartbeatIn (parsed and validated exactly as FastAPI would: json.loads, then the model).
    Every other request, including every invalid one, is passed on unchanged (the body is
    replayed), so errors keep FastAPI's status codes and messages.
    """

    def __init__(self, app, state: Any):
        self.app = app
        self.state = state
        self.route = _RouteLabel(HEARTBEAT_PATH)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != HEARTBEAT_PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        if content_type is not None and not _is_plain_json(content_type):
            return await self.app(scope, receive, send)
        try:
            token = bearer_token(authorization)
        except HTTPException:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = HeartbeatIn.model_validate(json.loads(raw))
        except (ValueError, ValidationError, RecursionError):
            return await self.app(scope, _replay(raw, receive), send)
        scope["route"] = self.route
        try:
            result = await self.state.heartbeats.submit(token, body)
        except HTTPException as exc:
            payload = {"detail": exc.detail}
            return await _send_json(send, exc.status_code, payload, exc.headers)
        payload = {
            "agent_id": result["agent_id"],
            "server_time": result["server_time"].isoformat().replace("+00:00", "Z"),
            "jobs": result["jobs"],
        }
        await _send_json(send, 200, payload)


def _is_plain_json(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _replay(raw: bytes, receive):
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


async def _send_json(send, status: int, payload: Any, extra_headers=None) -> None:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    for name, value in (extra_headers or {}).items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
