"""A batch of reports (any of the four kinds) in one transaction of Core statements, the same
on SQLite and PostgreSQL. Each report gets the answer the route gave it one at a time:

401/403 for a token that is not a live agent's; 403 for an offsite report of a host whose copy
its repository server makes; a replay (agent, report_id already stored, or earlier in the same
batch) 200 with the first row's id; past the agent's bounds 429 (saveos_api/ratelimit.py,
counted here, in the transaction that inserts); an unknown job 422, another agent's job 403;
else 201 with the new row's id. Rows are inserted per kind in agent order, so concurrent
batches take the agents' rows (agent_latest, written by triggers) in one order.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException
from sqlalchemy.dialects import postgresql, sqlite

from saveos_api import ratelimit, schemas
from saveos_api.auth import (
    agent_refusal,
    agent_token_hash,
    forbidden,
    live_agent_token,
    touch_agent_tokens,
)
from saveos_api.models import Agent, AgentToken, Job, utcnow
from saveos_api.reports.kinds import KINDS, OFFSITE, SNAPSHOTS, Kind

Answer = tuple[int, dict[str, Any]] | HTTPException


@dataclass
class Report:
    token: str
    kind: Kind
    body: schemas.Input
    future: asyncio.Future = field(repr=False)


def _ack(row_id: int, duplicate: bool) -> tuple[int, dict[str, Any]]:
    return (200 if duplicate else 201), {"id": row_id, "duplicate": duplicate}


def write(state, conn: sa.Connection, batch: list[Report]) -> list[Answer]:
    now = utcnow()
    hashes = [agent_token_hash(state.secret_key, r.token) for r in batch]
    results: list[Any] = [None] * len(batch)
    with conn.begin():
        # Authenticated in the transaction that writes: a revoked token fails at once.
        tokens = conn.execute(
            sa.select(
                AgentToken.id,
                AgentToken.token_hash,
                AgentToken.last_used_at,
                Agent.id.label("agent_id"),
                Agent.offsite_server,
            )
            .join(Agent, Agent.id == AgentToken.agent_id)
            .where(AgentToken.token_hash.in_(set(hashes) - {None}), live_agent_token())
        ).all()
        by_hash = {row.token_hash: row for row in tokens}
        pending: list[tuple[int, int, Report]] = []
        for index, (report, digest) in enumerate(zip(batch, hashes, strict=True)):
            row = by_hash.get(digest)
            if row is None:
                results[index] = agent_refusal(state, report.token)
            elif report.kind is OFFSITE and row.offsite_server is not None:
                results[index] = forbidden(
                    "this host's offsite copy is made by its repository server "
                    f"{row.offsite_server}"
                )
            else:
                pending.append((index, row.agent_id, report))
        touch_agent_tokens(conn, [(row.id, row.last_used_at) for row in tokens], now)
        ratelimit.lock(conn, {(a, r.kind.model.__tablename__) for _, a, r in pending})
        for kind in KINDS:
            mine = [p for p in pending if p[2].kind is kind]
            if mine:
                _write_kind(state, conn, kind, mine, results, now)
    return results


def _stored(conn: sa.Connection, model, keys: set[tuple[int, str]]) -> dict:
    """The ids of the rows already stored for these (agent, report_id) keys."""
    rows = conn.execute(
        _stored_statement(model),
        {"agents": list({a for a, _ in keys}), "reports": list({r for _, r in keys})},
    )
    return {(a, r): row_id for a, r, row_id in rows if (a, r) in keys}


@functools.cache
def _stored_statement(model) -> sa.Select:
    # Made once per kind: building a statement costs more CPU than running it for a small batch.
    return sa.select(model.agent_id, model.report_id, model.id).where(
        model.agent_id.in_(sa.bindparam("agents", expanding=True)),
        model.report_id.in_(sa.bindparam("reports", expanding=True)),
    )


def _write_kind(state, conn, kind: Kind, pending, results: list, now) -> None:
    model = kind.model
    stored = _stored(conn, model, {(a, r.body.report_id) for _, a, r in pending})
    fresh = [(i, a, r) for i, a, r in pending if (a, r.body.report_id) not in stored]
    for i, a, r in pending:
        if (a, r.body.report_id) in stored:
            results[i] = _ack(stored[(a, r.body.report_id)], True)
    if not fresh:
        return
    bounds = ratelimit.load(state, conn, model, {a for _, a, _ in fresh}, now)
    jobs = {r.body.job_id for _, _, r in fresh if r.body.job_id is not None}
    owners = (
        dict(conn.execute(sa.select(Job.id, Job.agent_id).where(Job.id.in_(jobs))).all())
        if jobs
        else {}
    )
    new: dict[tuple[int, str], list[int]] = {}  # the first index is the one inserted
    bodies: dict[tuple[int, str], Any] = {}
    rows: list[dict[str, Any]] = []
    for index, agent_id, report in fresh:
        key = (agent_id, report.body.report_id)
        if key in new:  # replayed within the batch
            new[key].append(index)
            continue
        refusal = bounds[agent_id].refusal(now) or _job_refusal(
            owners, agent_id, report.body.job_id
        )
        if refusal is not None:
            results[index] = refusal
            continue
        bounds[agent_id].take(now)
        new[key] = [index]
        bodies[key] = report.body
        rows.append({**kind.row(report.body), "agent_id": agent_id, "received_at": now})
    if not rows:
        return
    rows.sort(key=lambda row: row["agent_id"])
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    inserted = {
        (a, r): row_id
        for row_id, a, r in conn.execute(
            dialect.insert(model)
            .on_conflict_do_nothing(index_elements=["agent_id", "report_id"])
            .returning(model.id, model.agent_id, model.report_id),
            rows,
        )
    }
    # Lost a race with a concurrent replay of the same report (only where nothing locks).
    raced = _stored(conn, model, set(new) - set(inserted)) if len(inserted) < len(new) else {}
    for key, indexes in new.items():
        first = key in inserted
        row_id = inserted[key] if first else raced[key]
        for n, index in enumerate(indexes):
            results[index] = _ack(row_id, duplicate=n > 0 or not first)
    if kind is SNAPSHOTS:
        _record_repositories(conn, [(k[0], bodies[k]) for k in sorted(set(new) & set(inserted))])


def _job_refusal(owners: dict[int, int], agent_id: int, job_id: int | None):
    if job_id is None:
        return None
    owner = owners.get(job_id)
    if owner is None:
        error = {"loc": ["body", "job_id"], "msg": f"job {job_id} does not exist"}
        return HTTPException(422, detail=[{**error, "type": "value_error"}])
    if owner != agent_id:
        return forbidden(f"job {job_id} belongs to another agent")
    return None


def _record_repositories(conn, reports: list[tuple[int, schemas.SnapshotReport]]) -> None:
    """Where the agents' repositories live, from a batch's new snapshot reports (in agent,
    report_id order), in one UPDATE. A report older than the one recorded changes nothing
    (reports replayed from a spool arrive out of order); of one agent's reports the one kept is
    the one that recording them one by one would leave: the last that finished no earlier than
    those before it."""
    kept: dict[int, schemas.SnapshotReport] = {}
    for agent_id, body in reports:
        if body.repository is not None and (
            agent_id not in kept or body.finished_at >= kept[agent_id].finished_at
        ):
            kept[agent_id] = body
    if not kept:
        return
    rows = [
        {
            "agent_id": agent_id,
            "server": body.repository.server,
            "path": body.repository.path,
            "quota": body.repository.quota_bytes,
            "used": body.repository.used_bytes,
            "finished_at": body.finished_at,
        }
        for agent_id, body in sorted(kept.items())  # in agent order, like the heartbeat batches
    ]
    if conn.dialect.name == "postgresql":
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        conn.execute(_PG_RECORD_REPOSITORIES, columns)
    else:  # in process: one statement per agent costs no round trip
        conn.execute(_RECORD_REPOSITORY, rows)


_RECORD_REPOSITORY = (
    sa.update(Agent)
    .where(
        Agent.id == sa.bindparam("agent_id"),
        sa.or_(
            Agent.repository_reported_at.is_(None),
            Agent.repository_reported_at <= sa.bindparam("finished_at"),
        ),
    )
    .values(
        repository_server=sa.bindparam("server"),
        repository_path=sa.bindparam("path"),
        repository_quota_bytes=sa.bindparam("quota"),
        repository_used_bytes=sa.bindparam("used"),
        repository_reported_at=sa.bindparam("finished_at"),
    )
)
# The whole batch's in one UPDATE, taking the agents' rows in id order.
_PG_RECORD_REPOSITORIES = sa.text(
    """
    UPDATE agents a SET repository_server = r.server, repository_path = r.path,
        repository_quota_bytes = r.quota, repository_used_bytes = r.used,
        repository_reported_at = r.finished_at
    FROM (
        SELECT * FROM unnest(
            CAST(:agent_id AS integer[]), CAST(:server AS text[]), CAST(:path AS text[]),
            CAST(:quota AS bigint[]), CAST(:used AS bigint[]), CAST(:finished_at AS timestamptz[])
        ) AS u(agent_id, server, path, quota, used, finished_at)
        ORDER BY agent_id
    ) r
    WHERE a.id = r.agent_id
        AND (a.repository_reported_at IS NULL OR a.repository_reported_at <= r.finished_at)
    """
)
