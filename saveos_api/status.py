"""The status of one agent as a pure function of time and its last known facts.

Precedence (API.md): silent > tampered > locked > failing > never > overdue > late > ok.
Boundaries are strict: exactly at a deadline is still on time. `locked`: the latest backup
failed because the repository stayed locked (another borg process, or a lock the agent would
not break), which asks for a different remedy than a backup that failed on its own. `tampered`:
a central run found the host's repository tampered with (archives gone, deletes logged by the
host's key, segments changed) and no rollback has been recorded since.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from saveos_rules import ALARM_STATUSES, SEVERITY, STATUSES  # noqa: F401 - see ALARM

SILENT_AFTER_INTERVALS = 3
# The statuses and their order are shared with the CLI (saveos_rules); the names here are kept
# for the dashboard and older imports.
ALARM = ALARM_STATUSES


@dataclass(frozen=True)
class StatusInput:
    now: datetime
    created_at: datetime
    heartbeat_interval_s: int
    backup_interval_s: int
    backup_grace_s: int
    last_heartbeat: datetime | None = None
    last_snapshot_status: str | None = None  # "ok" | "warning" | "error"
    last_success_at: datetime | None = None
    last_check_result: str | None = None  # "ok" | "warning" | "error"
    # An agent that declares an offsite copy is late/overdue when that copy falls behind too.
    offsite_interval_s: int | None = None
    last_offsite_at: datetime | None = None  # last successful offsite sync
    last_snapshot_locked: bool = False  # the latest snapshot failed on a repository lock
    tampered_at: datetime | None = None  # a central run found tampering (agents.tampered_at)


def compute_status(s: StatusInput) -> str:
    return status_at(
        s.now,
        s.created_at,
        s.heartbeat_interval_s,
        s.backup_interval_s,
        s.backup_grace_s,
        s.last_heartbeat,
        s.last_snapshot_status,
        s.last_success_at,
        s.last_check_result,
        s.offsite_interval_s,
        s.last_offsite_at,
        s.last_snapshot_locked,
        tampered_at=s.tampered_at,
    )


def status_at(  # positional on purpose: the fleet view calls it 10,000 times
    now: datetime,
    created_at: datetime,
    heartbeat_interval_s: int,
    backup_interval_s: int,
    backup_grace_s: int,
    last_heartbeat: datetime | None,
    last_snapshot_status: str | None,
    last_success_at: datetime | None,
    last_check_result: str | None,
    offsite_interval_s: int | None,
    last_offsite_at: datetime | None,
    last_snapshot_locked: bool | None = False,
    *,
    tampered_at: datetime | None = None,
) -> str:
    """compute_status() without building a StatusInput; the same fields in the same order."""
    seen_since = last_heartbeat if last_heartbeat is not None else created_at
    if now - seen_since > timedelta(seconds=SILENT_AFTER_INTERVALS * heartbeat_interval_s):
        return "silent"
    if tampered_at is not None and tampered_at <= now:
        return "tampered"
    if last_snapshot_status == "error" and last_snapshot_locked:
        return "locked"
    if last_snapshot_status == "error" or last_check_result == "error":
        return "failing"
    if last_success_at is None:
        return "never"
    status = _behind(now, last_success_at, backup_interval_s, backup_grace_s)
    if offsite_interval_s:
        # never synced: measured from the agent's creation, like a first backup
        since = last_offsite_at or created_at
        offsite = _behind(now, since, offsite_interval_s, backup_grace_s)
        status = max(status, offsite, key=_BEHIND.index)
    return status


_BEHIND = ("ok", "late", "overdue")


def _behind(now: datetime, last: datetime, interval_s: int, grace_s: int) -> str:
    due = last + timedelta(seconds=interval_s)
    if now > due + timedelta(seconds=grace_s):
        return "overdue"
    if now > due:
        return "late"
    return "ok"
