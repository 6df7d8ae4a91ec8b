"""Bounds on what one agent may make the server store, both counted in the database, so they
hold across the workers of one API and across API instances behind one PostgreSQL: at most
`report_burst` reports of a kind received in any window of report_burst / report_rate_per_min
minutes (a sliding window: on average report_rate_per_min a minute), and at most
`reports_per_day` of a kind in a day. On PostgreSQL a transaction-scoped advisory lock per
(agent, kind) makes the count and the insert one step, so concurrent requests cannot both
take the last place."""

from __future__ import annotations

import zlib
from datetime import timedelta

import sqlalchemy as sa
from fastapi import HTTPException
from sqlalchemy.orm import Session

from saveos_api.models import utcnow

DAY = timedelta(days=1)


def too_many(detail: str, retry_after: float) -> HTTPException:
    return HTTPException(
        429, detail=detail, headers={"Retry-After": str(max(1, round(retry_after)))}
    )


def check_report_bounds(state, session: Session, model, agent_id: int) -> None:
    """429 when this agent sent its window's share of reports of this kind or stored its day's.
    Runs in the transaction that inserts the report (the lock is released by its commit)."""
    settings = state.settings
    kind = model.__tablename__
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.select(sa.func.pg_advisory_xact_lock(zlib.crc32(kind.encode()) >> 1, agent_id))
        )
    now = utcnow()
    window = timedelta(minutes=settings.report_burst / settings.report_rate_per_min)
    # the burst-th newest report inside the window: while there is one, the window is full
    full_since = session.scalar(
        sa.select(model.received_at)
        .where(model.agent_id == agent_id, model.received_at > now - window)
        .order_by(model.received_at.desc())
        .offset(settings.report_burst - 1)
        .limit(1)
    )
    if full_since is not None:
        wait = (_aware(full_since) + window - now).total_seconds()
        raise too_many(f"too many {kind} reports from this agent; retry in {wait:.0f} s", wait)
    cap = settings.reports_per_day
    recent = (
        sa.select(sa.literal(1))
        .where(model.agent_id == agent_id, model.received_at > now - DAY)
        .limit(cap)
        .subquery()
    )
    stored = session.scalar(sa.select(sa.func.count()).select_from(recent))
    if stored >= cap:
        raise too_many(f"this agent stored {cap} {kind} reports in the last day (the bound)", 3600)


def _aware(at):
    """SQLite gives naive UTC datetimes back."""
    from datetime import UTC

    return at if at.tzinfo else at.replace(tzinfo=UTC)
