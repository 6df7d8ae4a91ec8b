"""Why an agent has its status, in one line: "overdue: last good backup 2 d ago".

The status itself comes from saveos_api/status.py; this only explains it, naming the fact
that decided it (the same rules: which of the backup or the offsite copy fell behind).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from saveos_api.status import _behind


def age_text(seconds: float | None) -> str:
    """A short age: '42 s', '12 min', '5 h', '2.5 d'; 'never' for None."""
    if seconds is None:
        return "never"
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.1f} d".replace(".0 d", " d")


def when_text(moment: datetime | None, at: datetime) -> str:
    """'10:02' today, '2026-11-29 10:02' before that (UTC)."""
    if moment is None:
        return "never"
    if moment.date() == at.date():
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def _ago(moment: datetime | None, at: datetime) -> str:
    return "never" if moment is None else age_text((at - moment).total_seconds()) + " ago"


def status_reason(agent: dict[str, Any], at: datetime) -> str:
    """The reason for one row of fleet_status() (saveos_api/fleet.py) evaluated at `at`."""
    status = agent["status"]
    if status == "silent":
        heartbeat = agent["last_heartbeat"]
        if heartbeat is None:
            return "silent: never sent a heartbeat"
        quiet = age_text((at - heartbeat).total_seconds())
        return f"silent since {when_text(heartbeat, at)} (no heartbeat for {quiet})"
    if status == "tampered":
        return "tampered: a central run found the repository tampered with (no rollback since)"
    if status == "locked":
        return "locked: the last backup gave up on a repository lock held by another process"
    if status == "failing":
        if agent["last_snapshot_status"] == "error":
            return "failing: the last backup failed"
        if agent["last_check_result"] != "error" and agent.get("last_drill_result") == "fail":
            return f"failing: the last restore drill failed ({_ago(agent['last_drill_at'], at)})"
        return f"failing: the last check failed ({_ago(agent['last_check_at'], at)})"
    if status == "never":
        return "never backed up"
    backup_at = agent["last_backup_at"]
    if status in ("late", "overdue"):
        backup = _behind(at, backup_at, agent["backup_interval_s"], agent["backup_grace_s"])
        if backup == status:
            return f"{status}: last good backup {_ago(backup_at, at)}"
        stale = _stale_verification(agent, status, at)
        if stale:
            return stale
        offsite_at = agent["last_offsite_at"]
        if offsite_at is None:
            return f"{status}: never copied offsite"
        return f"{status}: last offsite copy {_ago(offsite_at, at)}"
    if status != "ok":  # a status this module does not know yet: say it plainly
        return status
    running = [r for r in agent.get("reasons") or () if r.startswith("running: ")]
    return running[0] if running else f"last good backup {_ago(backup_at, at)}"


# status.assess()'s words for a verification that fell behind -> the row's instant of it
_VERIFIED = {"check": "last_check_at", "drill": "last_drill_at", "escrow proof": "last_escrow_at"}


def _stale_verification(agent: dict[str, Any], status: str, at: datetime) -> str | None:
    """'overdue: last drill 9 d ago' when a check, drill or escrow proof decided the status."""
    for reason in agent.get("reasons") or ():
        what = reason.removeprefix("stale ").removesuffix(" (overdue)")
        overdue = reason.endswith(" (overdue)")
        if what in _VERIFIED and overdue == (status == "overdue"):
            moment = agent[_VERIFIED[what]]
            return f"{status}: {'no ' + what + ' yet' if moment is None else 'last ' + what}" + (
                f" {_ago(moment, at)}" if moment is not None else ""
            )
    return None
