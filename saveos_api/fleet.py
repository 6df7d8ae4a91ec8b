"""Fleet status in one query: each agent joined to its latest rows via correlated index lookups.

`(SELECT id ... WHERE agent_id = a.id AND finished_at <= :at ORDER BY finished_at DESC LIMIT 1)`
is one backward scan of the (agent_id, finished_at) index per agent on both SQLite and
PostgreSQL, so the cost grows with the number of agents, not with the history kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from saveos_api.models import (
    Agent,
    CheckResult,
    DrillResult,
    Heartbeat,
    Snapshot,
    UTCDateTime,
)
from saveos_api.status import STATUSES, StatusInput, compute_status

SUCCESS = ("ok", "warning")


def _latest_id(model, at: datetime, successful_only: bool = False) -> sa.ScalarSelect:
    inner = sa.orm.aliased(model)
    query = sa.select(inner.id).where(inner.agent_id == Agent.id, inner.finished_at <= at)
    if successful_only:
        query = query.where(inner.exit_status.in_(SUCCESS))
    return (
        query.order_by(inner.finished_at.desc(), inner.id.desc())
        .limit(1)
        .correlate(Agent)
        .scalar_subquery()
    )


def _latest_lateral(model, at: datetime, name: str, *columns: str, successful_only=False):
    query = sa.select(*(getattr(model, c) for c in columns)).where(
        model.agent_id == Agent.id, model.finished_at <= at
    )
    if successful_only:
        query = query.where(model.exit_status.in_(SUCCESS))
    return query.order_by(model.finished_at.desc(), model.id.desc()).limit(1).lateral(name)


def fleet_query_lateral(at: datetime) -> sa.Select:
    """PostgreSQL: LEFT JOIN LATERAL (... LIMIT 1) per kind of latest row.

    The planner must run each lateral once per agent as a backward scan of the (agent_id,
    finished_at, id) index; the portable form below lets it hash-join whole tables instead,
    which at a million snapshots costs seconds.
    """
    last = _latest_lateral(Snapshot, at, "last_snap", "exit_status")
    good = _latest_lateral(
        Snapshot,
        at,
        "good_snap",
        "finished_at",
        "archive",
        "original_size",
        "deduplicated_size",
        successful_only=True,
    )
    check = _latest_lateral(CheckResult, at, "last_check", "finished_at", "result")
    drill = _latest_lateral(DrillResult, at, "last_drill", "finished_at", "result")
    return (
        sa.select(
            Agent.id,
            Agent.name,
            Agent.created_at,
            Agent.backup_interval_s,
            Agent.backup_grace_s,
            Agent.heartbeat_interval_s,
            _last_heartbeat(at).label("last_heartbeat"),
            last.c.exit_status.label("last_snapshot_status"),
            sa.type_coerce(good.c.finished_at, UTCDateTime()).label("last_backup_at"),
            good.c.archive.label("last_archive"),
            good.c.original_size,
            good.c.deduplicated_size,
            sa.type_coerce(check.c.finished_at, UTCDateTime()).label("last_check_at"),
            check.c.result.label("last_check_result"),
            sa.type_coerce(drill.c.finished_at, UTCDateTime()).label("last_drill_at"),
            drill.c.result.label("last_drill_result"),
        )
        .select_from(Agent)
        .outerjoin(last, sa.true())
        .outerjoin(good, sa.true())
        .outerjoin(check, sa.true())
        .outerjoin(drill, sa.true())
        .where(sa.or_(Agent.decommissioned_at.is_(None), Agent.decommissioned_at > at))
        .order_by(Agent.name)
    )


def _last_heartbeat(at: datetime):
    hb_before_at = (
        sa.select(sa.func.max(Heartbeat.received_at))
        .where(Heartbeat.agent_id == Agent.id, Heartbeat.received_at <= at)
        .correlate(Agent)
        .scalar_subquery()
    )
    return sa.type_coerce(
        sa.case((Agent.last_seen <= at, Agent.last_seen), else_=hb_before_at), UTCDateTime()
    )


def fleet_query(at: datetime, dialect: str = "sqlite") -> sa.Select:
    if dialect == "postgresql":
        return fleet_query_lateral(at)
    last = sa.orm.aliased(Snapshot, name="last_snap")
    good = sa.orm.aliased(Snapshot, name="good_snap")
    check = sa.orm.aliased(CheckResult, name="last_check")
    drill = sa.orm.aliased(DrillResult, name="last_drill")
    hb_before_at = (
        sa.select(sa.func.max(Heartbeat.received_at))
        .where(Heartbeat.agent_id == Agent.id, Heartbeat.received_at <= at)
        .correlate(Agent)
        .scalar_subquery()
    )
    last_heartbeat = sa.type_coerce(
        sa.case((Agent.last_seen <= at, Agent.last_seen), else_=hb_before_at), UTCDateTime()
    )
    return (
        sa.select(
            Agent.id,
            Agent.name,
            Agent.created_at,
            Agent.backup_interval_s,
            Agent.backup_grace_s,
            Agent.heartbeat_interval_s,
            last_heartbeat.label("last_heartbeat"),
            last.exit_status.label("last_snapshot_status"),
            good.finished_at.label("last_backup_at"),
            good.archive.label("last_archive"),
            good.original_size,
            good.deduplicated_size,
            check.finished_at.label("last_check_at"),
            check.result.label("last_check_result"),
            drill.finished_at.label("last_drill_at"),
            drill.result.label("last_drill_result"),
        )
        .select_from(Agent)
        .outerjoin(last, last.id == _latest_id(Snapshot, at))
        .outerjoin(good, good.id == _latest_id(Snapshot, at, successful_only=True))
        .outerjoin(check, check.id == _latest_id(CheckResult, at))
        .outerjoin(drill, drill.id == _latest_id(DrillResult, at))
        .where(sa.or_(Agent.decommissioned_at.is_(None), Agent.decommissioned_at > at))
        .order_by(Agent.name)
    )


def fleet_status(conn: sa.Connection | sa.orm.Session, at: datetime) -> dict[str, Any]:
    agents: list[dict[str, Any]] = []
    by_status = dict.fromkeys(STATUSES, 0)
    original = deduplicated = 0
    dialect = (
        conn.get_bind().dialect.name if isinstance(conn, sa.orm.Session) else conn.dialect.name
    )
    for row in conn.execute(fleet_query(at, dialect)).mappings():
        status = compute_status(
            StatusInput(
                now=at,
                created_at=row["created_at"],
                heartbeat_interval_s=row["heartbeat_interval_s"],
                backup_interval_s=row["backup_interval_s"],
                backup_grace_s=row["backup_grace_s"],
                last_heartbeat=row["last_heartbeat"],
                last_snapshot_status=row["last_snapshot_status"],
                last_success_at=row["last_backup_at"],
                last_check_result=row["last_check_result"],
            )
        )
        by_status[status] += 1
        original += row["original_size"] or 0
        deduplicated += row["deduplicated_size"] or 0
        item = dict(row)
        del item["created_at"]
        item["status"] = status
        agents.append(item)
    return {
        "generated_at": at,
        "agents": agents,
        "totals": {
            "agents": len(agents),
            "by_status": by_status,
            "original_size": original,
            "deduplicated_size": deduplicated,
        },
    }
