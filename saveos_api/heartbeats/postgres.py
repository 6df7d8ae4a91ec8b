"""PostgreSQL: a whole batch of heartbeats in ONE prepared statement (one round trip)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException

from saveos_api import schedule
from saveos_api.auth import (
    LAST_USED_RESOLUTION,
    agent_refusal,
    agent_token_hash,
    live_agent_token_sql,
)
from saveos_api.heartbeats.batch import AGENT_FIELDS, COLUMN, TRIM_EVERY, Beat
from saveos_api.jobs import expire_jobs
from saveos_api.models import utcnow


def prepare(conn: sa.Connection) -> sa.Connection:
    """Set up a writer lane's own connection for the batch statement."""
    # One statement per batch: atomic on its own, no BEGIN/COMMIT round trips.
    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    # Planned once per connection: planning the statement costs more than
    # executing it for a small batch. The session is the writer's alone and is
    # closed for good, never pooled, when the lane stops (see disconnect).
    conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    # A plan made while the tables are tiny would scan `agents` for every beat,
    # and under a heartbeat load that table is mostly dead row versions.
    conn.exec_driver_sql("SET enable_seqscan = off")
    conn.exec_driver_sql(PG_PREPARE)
    conn.commit()
    return conn


def write(
    state, conn: sa.Connection, batch: list[Beat], expire: bool
) -> list[dict[str, Any] | HTTPException]:
    """The whole batch in ONE prepared statement (PG_BATCH): one round trip."""
    now = utcnow()
    if expire:
        # Skips the jobs another lane's batch is handing out (its statement does not hand
        # out stale ones anyway), so it never waits for, nor deadlocks with, a batch.
        expire_jobs(conn, now, state.settings.job_timeout_s, skip_locked=True)
        conn.commit()
    columns: dict[str, list[Any]] = {name: [] for name in ("hash", *AGENT_FIELDS)}
    for beat in batch:
        columns["hash"].append(agent_token_hash(state.secret_key, beat.token))
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
            by_agent.setdefault(agent_id, []).append({"id": job_id, "kind": kind, "params": params})
    results: list[dict[str, Any] | HTTPException] = []
    for index, beat in enumerate(batch):
        agent_id = agent_of.get(index)
        if agent_id is None:
            results.append(agent_refusal(state, beat.token))
        else:
            # Jobs go to the first of an agent's beats in the batch, and only once.
            results.append(
                {"agent_id": agent_id, "server_time": now, "jobs": by_agent.pop(agent_id, [])}
            )
    return results


def _job_order(row) -> tuple:
    # Beats first, then jobs by id (each agent's jobs in the order they were queued).
    return (row[2] is not None, row[2] or 0)


# The PostgreSQL batch: authenticate every beat (live token, agent not decommissioned),
# update each agent once (count, last_heartbeat_at, declared fields: the latest non-null value
# wins), insert every beat, trim the bounded history of agents that crossed a TRIM_EVERY
# boundary, refresh stale last_used_at, and hand out the queued jobs that have not timed out.
# All data-modifying CTEs see one snapshot and commit together. Returns one row per accepted beat
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
        WHERE t.token_hash = b.token_hash AND {live}
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
        last_heartbeat_at = %(now)s,
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
""".format(  # noqa: S608 - only constant column names and clauses go in; values are bound
    live=live_agent_token_sql("t", "a"),
    latest=",\n        ".join(
        f"(array_agg({f} ORDER BY n DESC) FILTER (WHERE {f} IS NOT NULL))[1] AS {f}"
        for f in AGENT_FIELDS
    ),
    declared=",\n        ".join(
        [
            f"{COLUMN[f]} = COALESCE(p.{f}{'::json' if f == 'facts' else ''}, a.{COLUMN[f]})"
            for f in AGENT_FIELDS
        ]
        # The effective interval: the provisioned one, or a stricter (shorter) declared one.
        + [
            f"{f} = LEAST(COALESCE(a.provisioned_{f}, a.{f}),"
            f" COALESCE(p.{f}, a.declared_{f}, a.provisioned_{f}, a.{f}))"
            for f in schedule.INTERVALS
        ]
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
