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
    EscrowProof,
    Heartbeat,
    OffsiteSync,
    Snapshot,
    UTCDateTime,
)
from saveos_api.status import STATUSES, StatusInput, compute_status

SUCCESS = ("ok", "warning")


def _latest_id(
    model, at: datetime, successful_only: bool = False, result: str | None = None
) -> sa.ScalarSelect:
    inner = sa.orm.aliased(model)
    query = sa.select(inner.id).where(inner.agent_id == Agent.id, inner.finished_at <= at)
    if successful_only:
        query = query.where(inner.exit_status.in_(SUCCESS))
    if result is not None:
        query = query.where(inner.result == result)
    return (
        query.order_by(inner.finished_at.desc(), inner.id.desc())
        .limit(1)
        .correlate(Agent)
        .scalar_subquery()
    )


def fleet_query(at: datetime) -> sa.Select:
    last = sa.orm.aliased(Snapshot, name="last_snap")
    good = sa.orm.aliased(Snapshot, name="good_snap")
    check = sa.orm.aliased(CheckResult, name="last_check")
    drill = sa.orm.aliased(DrillResult, name="last_drill")
    offsite = sa.orm.aliased(OffsiteSync, name="last_offsite")
    offsite_ok = sa.orm.aliased(OffsiteSync, name="good_offsite")
    escrow = sa.orm.aliased(EscrowProof, name="last_escrow")
    escrow_ok = sa.orm.aliased(EscrowProof, name="good_escrow")
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
            Agent.offsite_interval_s,
            offsite_ok.finished_at.label("last_offsite_at"),
            offsite.result.label("last_offsite_result"),
            escrow_ok.finished_at.label("last_escrow_at"),
            escrow.result.label("last_escrow_result"),
        )
        .select_from(Agent)
        .outerjoin(last, last.id == _latest_id(Snapshot, at))
        .outerjoin(good, good.id == _latest_id(Snapshot, at, successful_only=True))
        .outerjoin(check, check.id == _latest_id(CheckResult, at))
        .outerjoin(drill, drill.id == _latest_id(DrillResult, at))
        .outerjoin(offsite, offsite.id == _latest_id(OffsiteSync, at))
        .outerjoin(offsite_ok, offsite_ok.id == _latest_id(OffsiteSync, at, result="ok"))
        .outerjoin(escrow, escrow.id == _latest_id(EscrowProof, at))
        .outerjoin(escrow_ok, escrow_ok.id == _latest_id(EscrowProof, at, result="ok"))
        .where(sa.or_(Agent.decommissioned_at.is_(None), Agent.decommissioned_at > at))
        .order_by(Agent.name)
    )


def fleet_status(conn: sa.Connection | sa.orm.Session, at: datetime) -> dict[str, Any]:
    agents: list[dict[str, Any]] = []
    by_status = dict.fromkeys(STATUSES, 0)
    original = deduplicated = 0
    for row in conn.execute(fleet_query(at)).mappings():
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
                offsite_interval_s=row["offsite_interval_s"],
                last_offsite_at=row["last_offsite_at"],
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
