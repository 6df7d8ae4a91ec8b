"""The status of one agent as a pure function of time and its last known facts.

Precedence (API.md): silent > tampered > locked > failing > never > overdue > late > ok.
Boundaries are strict: exactly at a deadline is still on time. `locked`: the latest backup
failed because the repository stayed locked (another borg process, or a lock the agent would
not break), which asks for a different remedy than a backup that failed on its own. `tampered`:
a central run found the host's repository tampered with (archives gone, deletes logged by the
host's key, segments changed) and no rollback has been recorded since.

Verification counts like backups: a failed check or drill is `failing`; a check, drill or escrow
proof older than its provisioned interval is `late`, past interval + grace `overdue` (never done:
measured from the agent's creation). `assess` also says why, in the words `saveos status`
shows ("stale drill", "failed check", "running: backup since 10:02").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
    verification: Verification | None = None


@dataclass(frozen=True)
class Verification:
    """The verification schedule the agent was provisioned with and its latest results; an
    interval of None (or 0) expects none of that kind. `running`: what the agent's last
    heartbeat said it runs ([{kind, job_id, started_at}])."""

    last_check_at: datetime | None = None
    check_interval_s: int | None = None
    check_grace_s: int | None = 0
    last_drill_at: datetime | None = None
    last_drill_result: str | None = None  # "pass" | "fail"
    drill_interval_s: int | None = None
    drill_grace_s: int | None = 0
    last_escrow_at: datetime | None = None  # last passing escrow proof
    escrow_interval_s: int | None = None
    escrow_grace_s: int | None = 0
    running: tuple | list | None = None


NO_VERIFICATION = Verification()


def compute_status(s: StatusInput) -> str:
    return assess_input(s)[0]


def assess_input(s: StatusInput) -> tuple[str, list[str]]:
    return assess(
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
        s.verification,
        tampered_at=s.tampered_at,
    )


def assess(
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
    verification: Verification | None = None,
    *,
    tampered_at: datetime | None = None,
) -> tuple[str, list[str]]:
    """(status, reasons): the status and every finding behind it, worst first."""
    v = verification or NO_VERIFICATION
    running = running_reasons(v.running)
    seen_since = last_heartbeat if last_heartbeat is not None else created_at
    if now - seen_since > timedelta(seconds=SILENT_AFTER_INTERVALS * heartbeat_interval_s):
        # what it said it was doing when it went quiet helps, but silence is the alarm
        return "silent", ["no heartbeat", *(f"last said {r}" for r in running)]
    failed = [
        what
        for what, bad in (
            ("failed backup", last_snapshot_status == "error"),
            ("failed check", last_check_result == "error"),
            ("failed drill", v.last_drill_result == "fail"),
        )
        if bad
    ]
    behind: list[tuple[str, str]] = []  # (late|overdue, what)
    if last_success_at is not None:
        behind.append((_behind(now, last_success_at, backup_interval_s, backup_grace_s), "backup"))
    if offsite_interval_s:
        # never synced: measured from the agent's creation, like a first backup
        since = last_offsite_at or created_at
        behind.append((_behind(now, since, offsite_interval_s, backup_grace_s), "offsite copy"))
    for what, last, interval, grace in (
        ("check", v.last_check_at, v.check_interval_s, v.check_grace_s),
        ("drill", v.last_drill_at, v.drill_interval_s, v.drill_grace_s),
        ("escrow proof", v.last_escrow_at, v.escrow_interval_s, v.escrow_grace_s),
    ):
        if interval:
            behind.append((_behind(now, last or created_at, interval, grace or 0), what))
    stale = [
        f"{'late' if state == 'late' and what == 'backup' else 'stale'} {what}"
        + (" (overdue)" if state == "overdue" else "")
        for state, what in sorted(behind, key=lambda b: -_BEHIND.index(b[0]))
        if state != "ok"
    ]
    reasons = failed + stale + running
    if tampered_at is not None and tampered_at <= now:
        return "tampered", ["repository tampered with", *reasons]
    if last_snapshot_status == "error" and last_snapshot_locked:
        return "locked", ["repository locked", *reasons]
    if failed:
        return "failing", reasons
    if last_success_at is None:
        return "never", ["no backup yet", *reasons]
    worst = max((state for state, _ in behind), key=_BEHIND.index, default="ok")
    return worst, reasons


def running_reasons(running) -> list[str]:
    """'running: backup (job 12) since 10:02' for each piece of work the agent reported."""
    out = []
    for item in running or ():
        if not isinstance(item, dict) or not item.get("kind"):
            continue
        job = f" (job {item['job_id']})" if item.get("job_id") is not None else ""
        since = _hhmm(item.get("started_at"))
        out.append(f"running: {item['kind']}{job}" + (f" since {since}" if since else ""))
    return out


def _hhmm(value) -> str | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%H:%M")


_BEHIND = ("ok", "late", "overdue")


def _behind(now: datetime, last: datetime, interval_s: int, grace_s: int) -> str:
    due = last + timedelta(seconds=interval_s)
    if now > due + timedelta(seconds=grace_s):
        return "overdue"
    if now > due:
        return "late"
    return "ok"
