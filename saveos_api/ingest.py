"""The heartbeat hot path: a short-TTL agent-token cache and a group-commit writer.

One writer thread per server process owns one database connection. Requests queue their
heartbeat and wait; the writer takes everything queued, writes it in ONE transaction (one
UPDATE of the agent rows, one multi-row INSERT of history, one UPDATE handing out queued jobs)
and only after COMMIT answers each request. While a batch commits the next one gathers, so the
batch size follows the load with no timer: one heartbeat alone is written at once.

The writer is a thread, not an asyncio task, so it serves any event loop (uvicorn's, or the
per-request loops of Starlette's TestClient) and never blocks one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from saveos_api.models import Agent, Heartbeat, Job, utcnow

log = logging.getLogger("saveos_api.ingest")

# Trimming the bounded heartbeat history when an agent's count crosses a multiple of this keeps
# the hot path to plain inserts.
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
)
# Upper bound on one transaction; more waiting heartbeats go into the next one.
MAX_BATCH = 1000


class TokenCache:
    """token HMAC -> (agent_id, token_id) for `ttl` seconds.

    A revocation through this process clears the cache at once; other worker processes keep a
    revoked token usable for at most `ttl` seconds (the documented window). Unknown tokens are
    never cached, so a new token works immediately.
    """

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Any | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, value: Any) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) > 100_000:  # bounded: forget everything rather than grow
                self._entries.clear()
            # Jittered expiry: tokens cached together must not all expire (and hit the
            # database) in the same instant.
            expires = time.monotonic() + self.ttl * random.uniform(0.5, 1.0)  # noqa: S311
            self._entries[digest] = (expires, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class _Beat:
    agent_id: int
    changes: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


def _resolve(outcomes: list[tuple[asyncio.Future, Any]]) -> None:
    for future, outcome in outcomes:
        if future.done():  # the client went away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class AgentGone(Exception):
    """The agent row vanished between authentication and the write."""


class HeartbeatWriter:
    def __init__(self, engine: sa.Engine, history: Callable[[], int]):
        self.engine = engine
        self.history = history
        self._queue: queue.SimpleQueue[_Beat | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._conn: sa.Connection | None = None
        self.batches = 0
        self.beats = 0

    async def submit(self, agent_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Queue one heartbeat; returns its answer once the batch holding it is committed."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        beat = _Beat(agent_id, changes, loop, loop.create_future())
        self._queue.put(beat)
        return await beat.future

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="saveos-heartbeat-writer", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                break
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, batch: list[_Beat]) -> None:
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
                if self._conn.dialect.name == "postgresql":
                    # Each batch is one self-committing statement (see _BATCH_PG).
                    self._conn.execution_options(isolation_level="AUTOCOMMIT")
            if self._conn.dialect.name == "postgresql":
                answers = _write_batch_pg(self._conn, batch, self.history())
            else:
                answers = self._write_batch(self._conn, batch)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            answers = [self._as_dbapi_error(exc)] * len(batch)
            self._discard_connection()
        else:
            self.batches += 1
            self.beats += len(batch)
        # One wakeup per event loop for the whole batch, not one per request.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
        for beat, answer in zip(batch, answers, strict=True):
            by_loop.setdefault(beat.loop, []).append((beat.future, answer))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, outcomes)

    def _as_dbapi_error(self, exc: Exception) -> Exception:
        """Raw driver errors as SQLAlchemy's DBAPIError, so the app's handler answers 503/500."""
        dbapi = self.engine.dialect.loaded_dbapi
        if isinstance(exc, sa.exc.DBAPIError) or not isinstance(exc, dbapi.Error):
            return exc
        gone = self.engine.dialect.is_disconnect(exc, None, None)
        return sa.exc.DBAPIError.instance(None, None, exc, dbapi.Error, connection_invalidated=gone)

    def _discard_connection(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.invalidate()
            self._conn.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            log.debug("closing a broken connection failed", exc_info=True)
        self._conn = None

    def _write_batch(self, conn: sa.Connection, batch: list[_Beat]) -> list[Any]:
        """Portable path (SQLite: one writer anyway): Core statements, one transaction."""
        now = utcnow()
        per_agent = _per_agent(batch)
        counts: dict[int, int] = {}
        jobs: dict[int, list[dict[str, Any]]] = {}
        with conn.begin():
            for agent_id, (n, changes) in per_agent.items():
                count = conn.execute(
                    sa.update(Agent)
                    .where(Agent.id == agent_id)
                    .values(last_seen=now, heartbeat_count=Agent.heartbeat_count + n, **changes)
                    .returning(Agent.heartbeat_count)
                ).scalar()
                if count is not None:
                    counts[agent_id] = count
            live = [beat for beat in batch if beat.agent_id in counts]
            if live:
                conn.execute(sa.insert(Heartbeat), [_history_row(b, now) for b in live])
            keep = self.history()
            for agent_id in _crossed_trim_mark(counts, per_agent):
                _trim_heartbeats(conn, agent_id, keep)
            if counts:
                handed = conn.execute(
                    sa.update(Job)
                    .where(Job.agent_id.in_(list(counts)), Job.state == "queued")
                    .values(state="running", started_at=now)
                    .returning(Job.agent_id, Job.id, Job.kind, Job.params)
                ).all()
                for row in sorted(handed, key=lambda r: r.id):
                    jobs.setdefault(row.agent_id, []).append(
                        {"id": row.id, "kind": row.kind, "params": row.params}
                    )
        return _answers(batch, now, counts, jobs)


def _per_agent(batch: list[_Beat]) -> dict[int, tuple[int, dict[str, Any]]]:
    """{agent_id: (heartbeats in the batch, merged changes)}; the latest declaration wins."""
    merged: dict[int, tuple[int, dict[str, Any]]] = {}
    for beat in batch:
        n, changes = merged.get(beat.agent_id, (0, {}))
        merged[beat.agent_id] = (n + 1, {**changes, **beat.changes})
    return merged


def _history_row(beat: _Beat, now: datetime) -> dict[str, Any]:
    changes = beat.changes
    return {
        "agent_id": beat.agent_id,
        "received_at": now,
        "agent_version": changes.get("agent_version"),
        "borg_version": changes.get("borg_version"),
        "os": changes.get("os"),
        "facts": changes.get("facts"),
    }


def _crossed_trim_mark(counts: dict[int, int], per_agent: dict) -> list[int]:
    return [
        agent_id
        for agent_id, count in counts.items()
        if count // TRIM_EVERY != (count - per_agent[agent_id][0]) // TRIM_EVERY
    ]


def _answers(batch, now, counts, jobs) -> list[Any]:
    answers: list[Any] = []
    for beat in batch:
        if beat.agent_id not in counts:
            answers.append(AgentGone(beat.agent_id))
            continue
        # Jobs go to the first of an agent's heartbeats in the batch, once.
        answers.append(
            {"agent_id": beat.agent_id, "server_time": now, "jobs": jobs.pop(beat.agent_id, [])}
        )
    return answers


def _trim_heartbeats(conn: sa.Connection, agent_id: int, keep: int) -> None:
    oldest_kept = (
        sa.select(Heartbeat.received_at)
        .where(Heartbeat.agent_id == agent_id)
        .order_by(Heartbeat.received_at.desc())
        .limit(1)
        .offset(keep - 1)
        .scalar_subquery()
    )
    conn.execute(
        sa.delete(Heartbeat).where(
            Heartbeat.agent_id == agent_id, Heartbeat.received_at < oldest_kept
        )
    )


# PostgreSQL path: the whole batch is ONE statement on the writer's autocommit connection, so
# one round trip does the update, the history insert, the trim, the job hand-out and the commit
# (psycopg2 returns only after the implicit commit). One round trip also means the writer thread
# waits for the GIL once per batch, not once per statement.
# A field the heartbeat left out (NULL in v) keeps the agent's current value.
_BATCH_PG = """
WITH v (id, n, agent_version, borg_version, os, hostname, backup_interval_s,
        heartbeat_interval_s, facts) AS (VALUES {agents}),
hist (agent_id, agent_version, borg_version, os, facts) AS (VALUES {history}),
upd AS (
    UPDATE agents AS a SET
        last_seen = {now},
        heartbeat_count = a.heartbeat_count + v.n,
        agent_version = COALESCE(v.agent_version, a.agent_version),
        borg_version = COALESCE(v.borg_version, a.borg_version),
        os = COALESCE(v.os, a.os),
        hostname = COALESCE(v.hostname, a.hostname),
        backup_interval_s = COALESCE(v.backup_interval_s, a.backup_interval_s),
        heartbeat_interval_s = COALESCE(v.heartbeat_interval_s, a.heartbeat_interval_s),
        facts = COALESCE(v.facts, a.facts)
    FROM v WHERE a.id = v.id
    RETURNING a.id, a.heartbeat_count, v.n
),
ins AS (
    INSERT INTO heartbeats (agent_id, received_at, agent_version, borg_version, os, facts)
    SELECT hist.agent_id, {now}, hist.agent_version, hist.borg_version, hist.os, hist.facts
    FROM hist JOIN upd ON upd.id = hist.agent_id
),
trim AS (
    DELETE FROM heartbeats AS old USING upd
    WHERE old.agent_id = upd.id
      AND upd.heartbeat_count / {every} <> (upd.heartbeat_count - upd.n) / {every}
      AND old.received_at < (
          SELECT received_at FROM heartbeats AS h WHERE h.agent_id = upd.id
          ORDER BY received_at DESC LIMIT 1 OFFSET {skip})
),
handed AS (
    UPDATE jobs SET state = 'running', started_at = {now}
    WHERE agent_id IN (SELECT id FROM upd) AND state = 'queued'
    RETURNING agent_id, id, kind, params
)
SELECT 'agent', id, heartbeat_count, NULL::text, NULL::json FROM upd
UNION ALL
SELECT 'job', agent_id, id, kind, params FROM handed
"""
_AGENT_ROW = (
    "(%s::bigint, %s::int, %s::text, %s::text, %s::text, %s::text, %s::int, %s::int, %s::json)"
)
_HISTORY_ROW = "(%s::bigint, %s::text, %s::text, %s::text, %s::json)"
_TEXT_FIELDS = ("agent_version", "borg_version", "os", "hostname")
_INT_FIELDS = ("backup_interval_s", "heartbeat_interval_s")
# Two workers updating the same agents can deadlock; PostgreSQL aborts one batch, which is
# simply written again.
_ATTEMPTS = 3


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _write_batch_pg(conn: sa.Connection, batch: list[_Beat], keep: int) -> list[Any]:
    import psycopg2.errors

    now = utcnow()
    per_agent = _per_agent(batch)
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        agents = b",".join(
            cur.mogrify(
                _AGENT_ROW,
                (agent_id, n)
                + tuple(changes.get(name) for name in _TEXT_FIELDS + _INT_FIELDS)
                + (_json_or_none(changes.get("facts")),),
            )
            for agent_id, (n, changes) in sorted(per_agent.items())  # one lock order
        )
        history = b",".join(
            cur.mogrify(
                _HISTORY_ROW,
                (
                    beat.agent_id,
                    beat.changes.get("agent_version"),
                    beat.changes.get("borg_version"),
                    beat.changes.get("os"),
                    _json_or_none(beat.changes.get("facts")),
                ),
            )
            for beat in batch
        )
        sql = _BATCH_PG.format(
            agents=agents.decode(),
            history=history.decode(),
            now=cur.mogrify("%s::timestamptz", (now,)).decode(),
            every=TRIM_EVERY,
            skip=int(keep) - 1,
        )
        for attempt in range(_ATTEMPTS):
            try:
                cur.execute(sql)  # no parameters: everything above is already quoted
                rows = cur.fetchall()
                break
            except psycopg2.errors.DeadlockDetected:
                if attempt == _ATTEMPTS - 1:
                    raise
    counts: dict[int, int] = {}
    jobs: dict[int, list[dict[str, Any]]] = {}
    for kind, first, second, job_kind, params in sorted(rows, key=lambda r: r[2]):
        if kind == "agent":
            counts[first] = second
        else:
            jobs.setdefault(first, []).append({"id": second, "kind": job_kind, "params": params})
    return _answers(batch, now, counts, jobs)
