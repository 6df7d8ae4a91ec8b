"""The agent's clock: aware UTC instants, written and read as ISO 8601 with a 'Z'."""

from __future__ import annotations

import datetime as dt
from typing import Optional


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_epoch(value: Optional[str]) -> Optional[float]:
    """Seconds since the epoch of an ISO 8601 instant (as `iso` writes it); None if unreadable."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
