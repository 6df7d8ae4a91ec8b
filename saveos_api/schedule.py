"""The schedule is the provisioned one. The role provisions the intervals (POST provision);
an agent's heartbeat declares its own, which can only make the effective interval stricter
(shorter): a host cannot switch its own alarms off by declaring a year-long interval. What it
declared is kept beside the provisioned value, and a difference shows in the fleet status."""

from __future__ import annotations

from typing import Any

INTERVALS = ("backup_interval_s", "heartbeat_interval_s")


def effective(provisioned: int, declared: int | None) -> int:
    return provisioned if declared is None else min(provisioned, declared)


def provision(agent: Any, field: str, value: int) -> None:
    """The role's value for `field` on an Agent row, and the effective value it makes."""
    setattr(agent, f"provisioned_{field}", value)
    setattr(agent, field, effective(value, getattr(agent, f"declared_{field}")))


def mismatch(row: Any) -> list[str]:
    """The intervals an agent declared differently from what was provisioned."""
    return [
        field
        for field in INTERVALS
        if getattr(row, f"declared_{field}", None) is not None
        and getattr(row, f"provisioned_{field}", None) is not None
        and getattr(row, f"declared_{field}") != getattr(row, f"provisioned_{field}")
    ]
