"""Bounds on what one agent may make the server store, both counted in the database, so they
hold across the workers of one API and across API instances behind one PostgreSQL: at most
`report_burst` reports of a kind received in any window of report_burst / report_rate_per_min
minutes (a sliding window: on average report_rate_per_min a minute), and at most
`reports_per_day` of a kind in a day. On PostgreSQL a transaction-scoped advisory lock per
(agent, kind) makes the count and the insert one step, so concurrent requests cannot both
take the last place.

Counted for a whole batch of reports (saveos_api/reports/) in the transaction that inserts
them: `lock` first, then `load` the counts of the batch's agents in one statement per kind,
then ask each new report's `Bound.refusal` in order and `take` the ones stored (so they
count for the batch's next reports)."""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fastapi import HTTPException

DAY = timedelta(days=1)


def too_many(detail: str, retry_after: float) -> HTTPException:
    return HTTPException(
        429, detail=detail, headers={"Retry-After": str(max(1, round(retry_after)))}
    )


def lock(conn: sa.Connection, keys: set[tuple[int, str]]) -> None:
    """Take the (agent, kind) locks of a batch on PostgreSQL, in one order for every batch
    (and every worker), so that two batches never wait for each other in a cycle. Released by
    the transaction's end."""
    if conn.dialect.name != "postgresql" or not keys:
        return  # SQLite has one writer at a time anyway
    ordered = sorted(keys)
    # One round trip for the batch: unnest yields the pairs in array order, and each row's
    # lock is taken as the scan reaches it.
    conn.execute(
        _LOCK_ALL,
        {"agents": [a for a, _ in ordered], "kinds": [_kind_key(k) for _, k in ordered]},
    ).all()


_LOCK_ALL = sa.text(
    "SELECT pg_advisory_xact_lock(l.kind, l.agent)"
    " FROM unnest(CAST(:kinds AS integer[]), CAST(:agents AS integer[])) AS l(kind, agent)"
)


def _kind_key(kind: str) -> int:
    return zlib.crc32(kind.encode()) >> 1


@dataclass
class Bound:
    """One agent's count of one kind: the received_at of its newest reports (newest first,
    at most report_burst of them) and how many it stored in the last day."""

    kind: str
    burst: int
    window: timedelta
    cap: int
    newest: list[datetime] = field(default_factory=list)
    stored: int = 0

    def refusal(self, now: datetime) -> HTTPException | None:
        """The 429 that refuses one more report now, or None."""
        recent = [at for at in self.newest if at > now - self.window]
        if len(recent) >= self.burst:
            # the burst-th newest report inside the window: while there is one, it is full
            wait = (recent[self.burst - 1] + self.window - now).total_seconds()
            detail = f"too many {self.kind} reports from this agent; retry in {wait:.0f} s"
            return too_many(detail, wait)
        if self.stored >= self.cap:
            detail = f"this agent stored {self.cap} {self.kind} reports in the last day (the bound)"
            return too_many(detail, 3600)
        return None

    def take(self, now: datetime) -> None:
        """Count a report stored now (the batch's next reports see it)."""
        self.newest.insert(0, now)
        self.stored += 1


def load(state, conn: sa.Connection, model, agent_ids: set[int], now: datetime) -> dict:
    """The Bound of each agent for reports of `model`'s kind, in one statement."""
    settings = state.settings
    kind = model.__tablename__
    burst, cap = settings.report_burst, settings.reports_per_day
    window = timedelta(minutes=burst / settings.report_rate_per_min)
    bounds = {a: Bound(kind, burst, window, cap) for a in agent_ids}
    rows = conn.execute(
        _counts(model), {"agents": list(agent_ids), "since": now - DAY, "burst": burst}
    )
    for agent_id, received_at, stored in rows:
        bound = bounds[agent_id]
        bound.newest.append(received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC))
        bound.stored = stored
    return bounds


@functools.cache
def _counts(model) -> sa.Select:
    """The statement `load` runs, made once per kind: building it costs more CPU than running
    it for a small batch."""
    # What is stored per agent and day stays below the cap, so counting it all is bounded.
    day = (
        sa.select(
            model.agent_id,
            model.received_at,
            sa.func.row_number()
            .over(partition_by=model.agent_id, order_by=model.received_at.desc())
            .label("rn"),
            sa.func.count().over(partition_by=model.agent_id).label("stored"),
        )
        .where(
            model.agent_id.in_(sa.bindparam("agents", expanding=True)),
            model.received_at > sa.bindparam("since"),
        )
        .subquery()
    )
    return (
        sa.select(day.c.agent_id, day.c.received_at, day.c.stored)
        .where(day.c.rn <= sa.bindparam("burst"))
        .order_by(day.c.agent_id, day.c.rn)
    )
