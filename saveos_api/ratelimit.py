"""Bounds on what one agent may make the server store: a token bucket per agent and report
kind (in this process), and a per-agent cap on the reports of each kind stored in a day
(counted in the database, so it holds across workers and API instances)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import sqlalchemy as sa
from fastapi import HTTPException
from sqlalchemy.orm import Session

from saveos_api.models import utcnow

DAY = timedelta(days=1)


class TokenBucket:
    """`burst` requests at once, refilled at `per_min` a minute, per key."""

    def __init__(self, burst: int, per_min: float):
        self.burst = burst
        self.rate = per_min / 60.0
        self._state: dict[object, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: object) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._state.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
            if tokens < 1.0:
                self._state[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._state[key] = (tokens - 1.0, now)
            if len(self._state) > 100_000:  # forget full buckets of agents long quiet
                self._state = {k: v for k, v in self._state.items() if v[0] < self.burst}
            return 0.0


def too_many(detail: str, retry_after: float) -> HTTPException:
    return HTTPException(
        429, detail=detail, headers={"Retry-After": str(max(1, round(retry_after)))}
    )


def check_report_bounds(state, session: Session, model, agent_id: int) -> None:
    """429 when this agent sends reports of this kind too fast or stored its day's share."""
    settings = state.settings
    wait = state.report_limiter.take((agent_id, model.__tablename__))
    if wait:
        raise too_many(
            f"too many {model.__tablename__} reports from this agent; retry in {wait:.0f} s",
            wait,
        )
    cap = settings.reports_per_day
    recent = (
        sa.select(sa.literal(1))
        .where(model.agent_id == agent_id, model.received_at > utcnow() - DAY)
        .limit(cap)
        .subquery()
    )
    stored = session.scalar(sa.select(sa.func.count()).select_from(recent))
    if stored >= cap:
        raise too_many(
            f"this agent stored {cap} {model.__tablename__} reports in the last day (the bound)",
            3600,
        )
