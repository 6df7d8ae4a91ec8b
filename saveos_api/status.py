"""The status of one agent as a pure function of time and its last known facts.

Precedence (API.md): silent > tampered > locked > failing > never > overdue > late > ok.
Boundaries are strict: exactly at a deadline is still on time. `locked`: the latest backup
failed because the repository stayed locked (another borg process, or a lock the agent would
not break), which asks for a different remedy than a backup that failed on its own. `tampered`:
a central run found the host's repository tampered with (archives gone, deletes logged by the
host's key, segments changed) and no rollback has been recorded since.

Verification counts like backups: a failed check or drill is `failing`; a check, drill or escrow
proof older than its provisioned interval is `late`, past interval + grace `overdue` (never done:
measured from the agent's creation). `assess` also says why, twice from the same facts: the
findings worst first, in the words `saveos status` shows ("stale drill", "failed check",
"running: backup since 10:02"), and one line that explains the first of them with its instant
("overdue: last good backup 2 d ago", "silent since 10:02"): the dashboard's and the API's
`reason`. Nothing else works out why a host has its status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from saveos_rules import ALARM_STATUSES, SEVERITY, STATUSES, age_text, ago_text  # noqa: F401 - see ALARM

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


class Verification(NamedTuple):
    """The verification schedule the agent was provisioned with and its latest results; an
    interval of None (or 0) expects none of that kind. `running`: what the agent's last
    heartbeat said it runs ([{kind, job_id, started_at}]). A NamedTuple, not a frozen
    dataclass: the fleet view builds 10,000 of them per request, four times faster."""

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


class Assessment(NamedTuple):
    status: str
    reasons: list[str]  # every finding behind the status, worst first
    reason: str  # the first finding (or why all is well) in one line, with its instant


def assess_input(s: StatusInput) -> Assessment:
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
) -> Assessment:
    """The status, every finding behind it (worst first) and the first one explained.

    Ages are compared in seconds (one subtraction per instant, no timedelta built): the fleet
    view runs this 10,000 times per request."""
    v = verification or NO_VERIFICATION
    running = running_reasons(v.running) if v.running else []
    seen_since = last_heartbeat if last_heartbeat is not None else created_at
    if (now - seen_since).total_seconds() > SILENT_AFTER_INTERVALS * heartbeat_interval_s:
        # what it said it was doing when it went quiet helps, but silence is the alarm
        if last_heartbeat is None:
            why = "silent: never sent a heartbeat"
        else:
            quiet = age_text((now - last_heartbeat).total_seconds())
            why = f"silent since {when_text(last_heartbeat, now)} (no heartbeat for {quiet})"
        return Assessment("silent", ["no heartbeat", *(f"last said {r}" for r in running)], why)
    failed = []  # (finding, explained)
    if last_snapshot_status == "error":
        failed.append(("failed backup", "the last backup failed"))
    if last_check_result == "error":
        failed.append(("failed check", f"the last check failed ({_ago(v.last_check_at, now)})"))
    if v.last_drill_result == "fail":
        why = f"the last restore drill failed ({_ago(v.last_drill_at, now)})"
        failed.append(("failed drill", why))
    # (late|overdue, what, the instant it is measured from, how to name that instant)
    behind = []
    if last_success_at is not None:
        state = _behind(now, last_success_at, backup_interval_s, backup_grace_s)
        if state:
            behind.append((state, "backup", last_success_at, "last good backup"))
    if offsite_interval_s:
        # never synced: measured from the agent's creation, like a first backup
        state = _behind(now, last_offsite_at or created_at, offsite_interval_s, backup_grace_s)
        if state:
            behind.append((state, "offsite copy", last_offsite_at, "last offsite copy"))
    for what, last, interval, grace in (
        ("check", v.last_check_at, v.check_interval_s, v.check_grace_s),
        ("drill", v.last_drill_at, v.drill_interval_s, v.drill_grace_s),
        ("escrow proof", v.last_escrow_at, v.escrow_interval_s, v.escrow_grace_s),
    ):
        if interval:
            state = _behind(now, last or created_at, interval, grace or 0)
            if state:
                behind.append((state, what, last, f"last {what}"))
    if len(behind) > 1:  # overdue before late; stable, so the backup first within each
        behind.sort(key=_overdue_first)
    stale = [
        ("late " if state == "late" and what == "backup" else "stale ")
        + what
        + (" (overdue)" if state == "overdue" else "")
        for state, what, _, _ in behind
    ]
    reasons = [what for what, _ in failed] + stale + running
    if tampered_at is not None and tampered_at <= now:
        why = "tampered: a central run found the repository tampered with (no rollback since)"
        return Assessment("tampered", ["repository tampered with", *reasons], why)
    if last_snapshot_status == "error" and last_snapshot_locked:
        why = "locked: the last backup gave up on a repository lock held by another process"
        return Assessment("locked", ["repository locked", *reasons], why)
    if failed:
        return Assessment("failing", reasons, f"failing: {failed[0][1]}")
    if last_success_at is None:
        return Assessment("never", ["no backup yet", *reasons], "never backed up")
    if behind:  # the worst decides; its instant says since when
        state, what, last, named = behind[0]
        if last is not None:
            why = f"{state}: {named} {_ago(last, now)}"
        elif what == "offsite copy":
            why = f"{state}: never copied offsite"
        else:
            why = f"{state}: no {what} yet"
        return Assessment(state, reasons, why)
    why = running[0] if running else f"last good backup {_ago(last_success_at, now)}"
    return Assessment("ok", reasons, why)


def when_text(moment: datetime, at: datetime) -> str:
    """'10:02' on the day of `at`, '2026-11-29 10:02' before that (UTC)."""
    if moment.date() == at.date():
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def _ago(moment: datetime | None, at: datetime) -> str:
    return ago_text(None if moment is None else (at - moment).total_seconds())


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


def _overdue_first(item: tuple) -> bool:
    return item[0] != "overdue"


def _behind(now: datetime, last: datetime, interval_s: int, grace_s: int) -> str:
    """'overdue' past interval + grace, 'late' past the interval, '' on time (strict: exactly
    at a deadline is still on time)."""
    age = (now - last).total_seconds()
    if age > interval_s + grace_s:
        return "overdue"
    if age > interval_s:
        return "late"
    return ""
