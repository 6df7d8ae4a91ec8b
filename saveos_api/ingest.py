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
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
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
            self._entries[digest] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class _Beat:
    agent_id: int
    changes: dict[str, Any]
    future: Future = field(default_factory=Future)


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
        beat = _Beat(agent_id, changes)
        self._queue.put(beat)
        return await asyncio.wrap_future(beat.future)

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
            answers = self._write_batch(self._conn, batch)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            self._discard_connection()
            for beat in batch:
                if not beat.future.done():
                    beat.future.set_exception(exc)
            return
        self.batches += 1
        self.beats += len(batch)
        for beat, answer in zip(batch, answers, strict=True):
            if isinstance(answer, Exception):
                beat.future.set_exception(answer)
            else:
                beat.future.set_result(answer)

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
        now = utcnow()
        per_agent: dict[int, dict[str, Any]] = {}
        for beat in batch:
            agent = per_agent.setdefault(beat.agent_id, {"n": 0, "changes": {}})
            agent["n"] += 1
            agent["changes"].update(beat.changes)  # the latest declaration wins
        with conn.begin():
            counts = self._update_agents(conn, now, per_agent)
            live = [beat for beat in batch if beat.agent_id in counts]
            if live:
                conn.execute(
                    sa.insert(Heartbeat),
                    [
                        {
                            "agent_id": beat.agent_id,
                            "received_at": now,
                            "agent_version": beat.changes.get("agent_version"),
                            "borg_version": beat.changes.get("borg_version"),
                            "os": beat.changes.get("os"),
                            "facts": beat.changes.get("facts"),
                        }
                        for beat in live
                    ],
                )
            keep = self.history()
            for agent_id, count in counts.items():
                before = count - per_agent[agent_id]["n"]
                if count // TRIM_EVERY != before // TRIM_EVERY:
                    _trim_heartbeats(conn, agent_id, keep)
            jobs: dict[int, list[dict[str, Any]]] = {}
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

    def _update_agents(
        self, conn: sa.Connection, now: datetime, per_agent: dict[int, dict[str, Any]]
    ) -> dict[int, int]:
        """Bump every agent row of the batch; {agent_id: heartbeat_count after}."""
        if conn.dialect.name == "postgresql":
            return _update_agents_pg(conn, now, per_agent)
        counts = {}
        for agent_id, agent in per_agent.items():
            count = conn.execute(
                sa.update(Agent)
                .where(Agent.id == agent_id)
                .values(
                    last_seen=now,
                    heartbeat_count=Agent.heartbeat_count + agent["n"],
                    **agent["changes"],
                )
                .returning(Agent.heartbeat_count)
            ).scalar()
            if count is not None:
                counts[agent_id] = count
        return counts


# A field the heartbeat left out (NULL in v) keeps the agent's current value.
_UPDATE_AGENTS_PG = """
UPDATE agents AS a SET
    last_seen = v.seen,
    heartbeat_count = a.heartbeat_count + v.n,
    agent_version = COALESCE(v.agent_version, a.agent_version),
    borg_version = COALESCE(v.borg_version, a.borg_version),
    os = COALESCE(v.os, a.os),
    hostname = COALESCE(v.hostname, a.hostname),
    backup_interval_s = COALESCE(v.backup_interval_s, a.backup_interval_s),
    heartbeat_interval_s = COALESCE(v.heartbeat_interval_s, a.heartbeat_interval_s),
    facts = COALESCE(v.facts, a.facts)
FROM (VALUES %s) AS v(id, n, seen, agent_version, borg_version, os, hostname,
                      backup_interval_s, heartbeat_interval_s, facts)
WHERE a.id = v.id
RETURNING a.id, a.heartbeat_count
"""


def _update_agents_pg(
    conn: sa.Connection, now: datetime, per_agent: dict[int, dict[str, Any]]
) -> dict[int, int]:
    # One statement for the whole batch: UPDATE ... FROM (VALUES ...) with typed columns.
    from psycopg2.extras import execute_values

    text_fields = ("agent_version", "borg_version", "os", "hostname")
    int_fields = ("backup_interval_s", "heartbeat_interval_s")
    sql = _UPDATE_AGENTS_PG
    template = (
        "(%s::bigint, %s::int, %s::timestamptz, %s::text, %s::text, %s::text, %s::text, "
        "%s::int, %s::int, %s::json)"
    )
    rows = []
    for agent_id, agent in per_agent.items():
        changes = agent["changes"]
        facts = changes.get("facts")
        rows.append(
            (agent_id, agent["n"], now)
            + tuple(changes.get(name) for name in text_fields + int_fields)
            + (None if facts is None else json.dumps(facts),)
        )
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        result = execute_values(
            cursor, sql, rows, template=template, page_size=len(rows), fetch=True
        )
    finally:
        cursor.close()
    return dict(result)


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
