"""Fleet status in one query: each agent joined to its latest rows by per-agent index probes.

`... WHERE agent_id = a.id AND finished_at <= :at ORDER BY finished_at DESC LIMIT 1` is one
backward scan of the (agent_id, finished_at) index per agent, so the cost grows with the number
of agents, not with the history kept.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from saveos_api.models import (
    Agent,
    CheckResult,
    DrillResult,
    EscrowProof,
    Heartbeat,
    OffsiteSync,
    Snapshot,
    UTCDateTime,
)
from saveos_api.status import STATUSES, status_at

SUCCESS = ("ok", "warning")
_PLAIN = sa.DateTime(timezone=True)


def _latest(model, name: str, at: datetime, columns: tuple[str, ...], lateral: bool, **where):
    """The agent's latest row of `model` finished by `at`: (join target, ON clause, columns).

    PostgreSQL gets a LATERAL subquery (one index probe per agent; a plain join on a correlated
    subquery makes its planner hash the whole table). SQLite has no LATERAL but only does
    nested loops, so joining on the correlated subquery is the same index probe there.
    """
    inner = sa.orm.aliased(model)
    query = sa.select(*(getattr(inner, c).label(c) for c in columns)).where(
        inner.agent_id == Agent.id,
        inner.finished_at <= at,
        *(getattr(inner, k).in_(v) for k, v in where.items()),
    )
    query = query.order_by(inner.finished_at.desc(), inner.id.desc()).limit(1)
    if lateral:
        sub = query.lateral(name)
        return sub, sa.true(), {c: sub.c[c] for c in columns}
    outer = sa.orm.aliased(model, name=name)
    latest_id = query.with_only_columns(inner.id).correlate(Agent).scalar_subquery()
    return outer, outer.id == latest_id, {c: getattr(outer, c) for c in columns}


def fleet_query(at: datetime, lateral: bool = False, plain_instants: bool = False) -> sa.Select:
    """plain_instants: read instants as the driver returns them (PostgreSQL with the session in
    UTC), without UTCDateTime's per-value conversion."""
    inst = (lambda c: sa.type_coerce(c, _PLAIN)) if plain_instants else (lambda c: c)
    last = _latest(Snapshot, "last_snap", at, ("exit_status",), lateral)
    good = _latest(
        Snapshot,
        "good_snap",
        at,
        ("finished_at", "archive", "original_size", "deduplicated_size"),
        lateral,
        exit_status=SUCCESS,
    )
    check = _latest(CheckResult, "last_check", at, ("finished_at", "result"), lateral)
    drill = _latest(DrillResult, "last_drill", at, ("finished_at", "result"), lateral)
    offsite = _latest(OffsiteSync, "last_offsite", at, ("result",), lateral)
    offsite_ok = _latest(OffsiteSync, "good_offsite", at, ("finished_at",), lateral, result=["ok"])
    escrow = _latest(EscrowProof, "last_escrow", at, ("result",), lateral)
    escrow_ok = _latest(EscrowProof, "good_escrow", at, ("finished_at",), lateral, result=["ok"])
    hb_before_at = (
        sa.select(sa.func.max(Heartbeat.received_at))
        .where(Heartbeat.agent_id == Agent.id, Heartbeat.received_at <= at)
        .correlate(Agent)
        .scalar_subquery()
    )
    last_heartbeat = sa.type_coerce(
        sa.case((Agent.last_seen <= at, Agent.last_seen), else_=hb_before_at), UTCDateTime()
    )
    query = sa.select(
        Agent.id,
        Agent.name,
        inst(Agent.created_at).label("created_at"),
        Agent.backup_interval_s,
        Agent.backup_grace_s,
        Agent.heartbeat_interval_s,
        inst(last_heartbeat).label("last_heartbeat"),
        last[2]["exit_status"].label("last_snapshot_status"),
        inst(good[2]["finished_at"]).label("last_backup_at"),
        good[2]["archive"].label("last_archive"),
        good[2]["original_size"].label("original_size"),
        good[2]["deduplicated_size"].label("deduplicated_size"),
        inst(check[2]["finished_at"]).label("last_check_at"),
        check[2]["result"].label("last_check_result"),
        inst(drill[2]["finished_at"]).label("last_drill_at"),
        drill[2]["result"].label("last_drill_result"),
        Agent.offsite_interval_s,
        inst(offsite_ok[2]["finished_at"]).label("last_offsite_at"),
        offsite[2]["result"].label("last_offsite_result"),
        inst(escrow_ok[2]["finished_at"]).label("last_escrow_at"),
        escrow[2]["result"].label("last_escrow_result"),
    ).select_from(Agent)
    for target, on, _columns in (last, good, check, drill, offsite, offsite_ok, escrow, escrow_ok):
        query = query.outerjoin(target, on)
    return query.where(
        sa.or_(Agent.decommissioned_at.is_(None), Agent.decommissioned_at > at)
    ).order_by(Agent.name)


# The instants among fleet_query()'s output columns (created_at is read, not returned).
_INSTANTS = (
    "last_heartbeat",
    "last_backup_at",
    "last_check_at",
    "last_drill_at",
    "last_offsite_at",
    "last_escrow_at",
)


def _fleet(conn: sa.Connection | sa.orm.Session, at: datetime, as_text: bool) -> dict[str, Any]:
    """One pass over the rows: status, totals, and (as_text) instants already as ISO strings.

    10,000 agents make this a hot loop, so it reads plain tuples by position and calls the
    positional status function rather than building a StatusInput per agent.
    """
    bind = conn if isinstance(conn, sa.Connection) else conn.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    if postgresql:
        # The per-agent probes cost the planner past jit_above_cost, and compiling the plan
        # took longer (0.2 s) than running it. Times come back in UTC, as on SQLite.
        conn.execute(sa.text("SET LOCAL jit = off"))
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
    result = conn.execute(fleet_query(at, lateral=postgresql, plain_instants=postgresql))
    columns = list(result.keys())
    created = columns.index("created_at")
    keys = [k for k in columns if k != "created_at"] + ["status"]
    instants = [keys.index(k) for k in _INSTANTS]
    ix = {k: i for i, k in enumerate(keys)}
    hb_i, hb_last = ix["heartbeat_interval_s"], ix["last_heartbeat"]
    b_int, b_grace, b_last = ix["backup_interval_s"], ix["backup_grace_s"], ix["last_backup_at"]
    snap, check = ix["last_snapshot_status"], ix["last_check_result"]
    o_int, o_last = ix["offsite_interval_s"], ix["last_offsite_at"]
    orig, dedup = ix["original_size"], ix["deduplicated_size"]
    by_status = dict.fromkeys(STATUSES, 0)
    original = deduplicated = 0
    agents: list[dict[str, Any]] = []
    for values in result.tuples().all():
        row = list(values)
        created_at = row.pop(created)
        status = status_at(
            at,
            created_at,
            row[hb_i],
            row[b_int],
            row[b_grace],
            row[hb_last],
            row[snap],
            row[b_last],
            row[check],
            row[o_int],
            row[o_last],
        )
        by_status[status] += 1
        original += row[orig] or 0
        deduplicated += row[dedup] or 0
        if as_text:
            for i in instants:
                if row[i] is not None:
                    row[i] = row[i].isoformat().replace("+00:00", "Z")
        row.append(status)
        agents.append(dict(zip(keys, row, strict=True)))
    return {
        "generated_at": at.isoformat().replace("+00:00", "Z") if as_text else at,
        "agents": agents,
        "totals": {
            "agents": len(agents),
            "by_status": by_status,
            "original_size": original,
            "deduplicated_size": deduplicated,
        },
    }


def fleet_status(conn: sa.Connection | sa.orm.Session, at: datetime) -> dict[str, Any]:
    """The fleet status with aware UTC datetimes (the metrics collector reads these)."""
    return _fleet(conn, at, as_text=False)


def fleet_status_json(conn: sa.Connection | sa.orm.Session, at: datetime) -> bytes:
    """The fleet status as JSON, shaped like FleetStatusOut (schemathesis checks that): the C
    encoder on ready-made strings is several times faster on 10k agents than validating the
    same data through the response model again, or than a `default=` callback per instant."""
    return json.dumps(_fleet(conn, at, as_text=True), separators=(",", ":")).encode()
