"""What the operator reads: the reason for a status and the text of every kind of notice.

Every notice about one host names the host, its new status (and the old one), the reason, the
last good backup and, when SAVEOS_DASHBOARD_URL is set, a link to the host's page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from saveos_rules import duration_text as duration

from saveos_api.alerts.levels import level_of

# Apprise notify types: the colour/icon a channel shows.
FAILURE, WARNING, SUCCESS, INFO = "failure", "warning", "success", "info"
NAMES_IN_SUMMARY = 20


@dataclass(frozen=True)
class Notice:
    title: str
    body: str
    notify_type: str


def when(at: datetime | None) -> str:
    return "never" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


# Findings of status.assess() that the detailed line below already says in full.
_SAID = {
    "no heartbeat",
    "repository tampered with",
    "repository locked",
    "no backup yet",
    "failed backup",
    "failed check",
}


def reason(agent: dict[str, Any], now: datetime) -> str:
    """Why `agent` (a fleet_status row) has its status, in one line: the headline in detail
    (ages, intervals), then every other finding of the status rule (status.assess: stale
    checks or drills, what the agent was running, ...)."""
    findings = [str(f) for f in agent.get("reasons") or ()]
    backup = [f for f in findings if f.endswith(("backup", "backup (overdue)"))]
    extra = [f for f in findings if f not in _SAID and f not in backup]
    if agent["status"] in ("late", "overdue") and findings and not backup:
        return "; ".join(extra)  # not the backup: a check, drill, escrow or offsite copy
    return "; ".join([_headline(agent, now, bool(backup)), *extra])


def _headline(agent: dict[str, Any], now: datetime, backup_behind: bool = True) -> str:
    """backup_behind: status.assess() found the backup late or overdue (the rule is there)."""
    status = agent["status"]
    if status == "silent":
        return (
            f"no heartbeat for {duration(agent.get('last_heartbeat_age_s'))} "
            f"(expected every {duration(agent.get('heartbeat_interval_s'))})"
            if agent.get("last_heartbeat")
            else "no heartbeat since it was registered"
        )
    if status == "tampered":
        return "a central run found the repository tampered with"
    if status == "locked":
        return "the latest backup gave up on a repository lock"
    if status == "failing":
        if agent.get("last_snapshot_status") == "error":
            return "the latest backup failed"
        if agent.get("last_check_result") == "error":
            return "the latest repository check failed"
        return "a recent job failed"
    if status == "never":
        return "no successful backup yet"
    if status in ("late", "overdue"):
        every = duration(agent.get("backup_interval_s"))
        grace = duration(agent.get("backup_grace_s"))
        age = agent.get("last_backup_age_s")
        if agent.get("offsite_interval_s") and not backup_behind:
            return f"the offsite copy is behind (every {duration(agent['offsite_interval_s'])})"
        return f"last good backup {duration(age)} ago (every {every}, grace {grace})"
    if status == "ok":
        return f"backed up {duration(agent.get('last_backup_age_s'))} ago, heartbeating"
    return status


def host_link(dashboard_url: str | None, name: str) -> str | None:
    if not dashboard_url:
        return None
    return f"{dashboard_url.rstrip('/')}/hosts/{name}"


def flip_notice(
    agent: dict[str, Any],
    old: str | None,
    new: str,
    why: str,
    at: datetime,
    dashboard_url: str | None,
    repeat_since: datetime | None = None,
) -> Notice:
    name = agent["name"]
    recovered = new == "ok"
    if repeat_since is not None:
        title = f"SaveOS: {name} is still {new}"
    elif recovered:
        title = f"SaveOS: {name} recovered (ok)"
    else:
        title = f"SaveOS: {name} is {new}"
    lines = [
        f"Host: {name}",
        f"Status: {new}" + (f" (was {old})" if old else ""),
        f"Reason: {why}",
        f"Last good backup: {when(agent.get('last_backup_at'))}"
        + (f" ({agent['last_archive']})" if agent.get("last_archive") else ""),
        f"At: {when(at)}",
    ]
    if repeat_since is not None:
        lines.append(f"{new.capitalize()} since: {when(repeat_since)}")
    link = host_link(dashboard_url, name)
    if link:
        lines.append(f"Dashboard: {link}")
    if recovered:
        kind = SUCCESS
    elif level_of(new) >= level_of("overdue"):
        kind = FAILURE
    else:
        kind = WARNING
    return Notice(title, "\n".join(lines), kind)


def summary_notice(
    changes: list[tuple[str, str | None, str]], at: datetime, dashboard_url: str | None
) -> Notice:
    """One notice for many flips of one evaluation (name, old, new): counts, then names."""
    by_new = Counter(new for _name, _old, new in changes)
    worst = max(by_new, key=level_of)
    title = f"SaveOS: {len(changes)} hosts changed status (" + ", ".join(
        f"{count} {status}"
        for status, count in sorted(by_new.items(), key=lambda i: -level_of(i[0]))
    )
    title += ")"
    lines = [f"At: {when(at)}", ""]
    for status in sorted(by_new, key=lambda s: -level_of(s)):
        names = sorted(name for name, _old, new in changes if new == status)
        shown = ", ".join(names[:NAMES_IN_SUMMARY])
        more = f" and {len(names) - NAMES_IN_SUMMARY} more" if len(names) > NAMES_IN_SUMMARY else ""
        lines.append(f"Now {status} ({len(names)}): {shown}{more}")
    if dashboard_url:
        lines += ["", f"Dashboard: {dashboard_url.rstrip('/')}/"]
    kind = (
        SUCCESS if worst == "ok" else FAILURE if level_of(worst) >= level_of("overdue") else WARNING
    )
    return Notice(title[:250], "\n".join(lines), kind)


def digest_notice(
    bad: list[tuple[str, str]],
    flips: int,
    since: datetime,
    at: datetime,
    dashboard_url: str | None,
) -> Notice:
    """The daily digest: hosts in trouble now (name, status) and how many flips since `since`."""
    if not bad:
        title = "SaveOS digest: every host ok"
    else:
        title = f"SaveOS digest: {len(bad)} host(s) need attention"
    lines = [f"Period: {when(since)} to {when(at)}", f"Status changes in the period: {flips}", ""]
    by_status: dict[str, list[str]] = {}
    for name, status in bad:
        by_status.setdefault(status, []).append(name)
    for status in sorted(by_status, key=lambda s: -level_of(s)):
        names = sorted(by_status[status])
        shown = ", ".join(names[:NAMES_IN_SUMMARY])
        more = f" and {len(names) - NAMES_IN_SUMMARY} more" if len(names) > NAMES_IN_SUMMARY else ""
        lines.append(f"{status} ({len(names)}): {shown}{more}")
    if dashboard_url:
        lines += ["", f"Dashboard: {dashboard_url.rstrip('/')}/"]
    return Notice(title, "\n".join(lines), WARNING if bad else SUCCESS)


def test_notice(at: datetime, channel: str) -> Notice:
    return Notice(
        "SaveOS test notification",
        f"This is a test from SaveOS at {when(at)} to channel {channel}. Alerts reach you here.",
        INFO,
    )
