"""Scheduled verification: the borg check (with --verify-data in turn) and the restore drill
that the systemd timers (`check --scheduled`, `drill --scheduled`) or the daemon run."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Dict, Optional

from saveos_agent.actions import check, drill
from saveos_agent.clock import iso, utcnow
from saveos_agent.state import load_state, save_state


def _parse(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def next_slot(after: float, interval: int, offset: int) -> float:
    """The first slot (k * interval + offset, epoch seconds) strictly after `after`."""
    return ((after - offset) // interval + 1) * interval + offset


def slot_due(last: Optional[float], interval: int, offset: int, now: float, since: float) -> bool:
    """Due once the host's next slot after the last run (or after `since`) has come."""
    if interval <= 0:
        return False
    return now >= next_slot(last if last is not None else since, interval, offset)


def verify_data_due(cfg, now: Optional[float] = None) -> bool:
    """Should this scheduled check read every chunk? When the last such check is too old."""
    every = cfg.verify.verify_data_interval_s
    if every <= 0:
        return False
    last = _parse(load_state(cfg).get("last_verify_data_at"))
    return last is None or (now if now is not None else time.time()) >= last + every


def check_due(cfg, now: float, since: float) -> bool:
    last = _parse(load_state(cfg).get("last_check_at"))
    return slot_due(last, cfg.verify.check_interval_s, cfg.verify.check_offset_s, now, since)


def drill_due(cfg, now: float, since: float) -> bool:
    state = load_state(cfg)
    if not state.get("last_backup_at"):
        return False  # nothing to restore yet
    last = _parse(state.get("last_drill_at"))
    return slot_due(last, cfg.verify.drill_interval_s, cfg.verify.drill_offset_s, now, since)


def scheduled_check(cfg, wait_s: Optional[int] = None) -> Dict[str, Any]:
    verify_data = verify_data_due(cfg)
    out = check.check(cfg, verify_data=verify_data, trigger="schedule", wait_s=wait_s)
    if verify_data:
        save_state(cfg, last_verify_data_at=iso(utcnow()))
    return out


def scheduled_drill(cfg) -> Dict[str, Any]:
    return drill.drill(cfg, count=cfg.verify.drill_count)
