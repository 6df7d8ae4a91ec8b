"""The fleet view from the API: `saveos status` (table, --json, exit codes for monitoring)."""

from __future__ import annotations

import functools
import io
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from saveos_rules import ALARM_STATUSES, FLEET_ROW_DEPRECATED, FLEET_ROW_KEYS, SEVERITY

from saveos_cli.columns import Column
from saveos_cli.commands._common import (
    age_seconds,
    api,
    console,
    human_age,
    human_size,
    iso,
    parse_when,
)
from saveos_cli.errors import EXIT_FLEET, EXIT_OK, SaveOSError
from saveos_cli.safe_text import cell

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# Rich is imported by the functions that draw tables: `status --json` on a 10,000-host fleet
# only parses, adds the ages and prints, and starting the CLI is a good part of its time.

STATUS_STYLE = {
    "ok": "bold green",
    "late": "yellow",
    "overdue": "bold red",
    "failing": "bold red",
    "silent": "bold magenta",
    "locked": "bold red",
    "tampered": "bold white on red",
    "never": "cyan",
}
# The statuses that make `saveos status` exit 2 (monitoring and cron act on it).
ALARM = ALARM_STATUSES
# A larger fleet's table shows this many hosts, worst first, unless --all (10,000 rows take
# Rich seconds to draw and bury the few hosts that matter); --json always has every host.
TABLE_ROWS = 50
NAMED_ALARMS = 20

# `status --json` keys per agent, in order; documented in README (CLI section). Only additions.
AGENT_KEYS = FLEET_ROW_KEYS


def status_report(raw: dict, at: datetime | None) -> dict:
    """The stable `--json` document built from GET /api/v1/fleet/status."""
    agents = sorted(raw["agents"], key=lambda a: a["name"])
    if agents and tuple(agents[0]) != AGENT_KEYS:
        # An API from before the ages were added: build the rows here.
        now = at or iso(raw["generated_at"])
        agents = [_with_ages({key: a.get(key) for key in AGENT_KEYS}, now) for a in agents]
    totals = raw.get("totals") or {}
    alarms = sorted(a["name"] for a in agents if a["status"] in ALARM)
    return {
        "generated_at": raw["generated_at"],
        "at": at.isoformat() if at else None,
        "exit_code": EXIT_FLEET if alarms else EXIT_OK,
        "alarms": alarms,
        "agents": agents,
        "totals": {
            "agents": totals.get("agents", len(agents)),
            "by_status": dict(totals.get("by_status") or {}),
            "original_size": totals.get("original_size", 0),
            "deduplicated_size": totals.get("deduplicated_size", 0),
        },
    }


def _with_ages(row: dict, now: datetime) -> dict:
    # An older API sends some keys only under their names from before docs/GLOSSARY.md.
    for old, new in FLEET_ROW_DEPRECATED.items():
        if row[new] is None:  # an API from before the key was added
            row[new] = row[old]
    row["last_heartbeat_age_s"] = age_seconds(row["last_heartbeat"], now)
    row["last_backup_age_s"] = age_seconds(row["last_backup_at"], now)
    row["last_offsite_age_s"] = age_seconds(row["last_offsite_at"], now)
    return row


def report_json(report: dict) -> str:
    """json.dumps(report, indent=2), the same text, over ten times faster on a large fleet.

    With indent the stdlib encodes in Python (0.4 s for 10,000 agents here); orjson writes the
    same text unless it holds non-ASCII, which the stdlib escapes and orjson does not.
    """
    try:
        text = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: only the stdlib takes it
        text = b"\x80"
    return text.decode() if text.isascii() else json.dumps(report, indent=2)


@functools.cache
def _shared(text: str, style: str) -> Text:
    """A cell many rows show (never, -): one Text for all of them (Rich never changes it)."""
    from rich.text import Text

    return Text(text, style=style)


def _result(at: str | None, result: str | None, now: datetime) -> Text:
    from rich.text import Text

    if not at:
        return _shared("never", "dim")
    style = (
        "green" if result in ("ok", "pass") else "red" if result in ("error", "fail") else "yellow"
    )
    return Text.assemble((result or "?", style), f" {human_age(age_seconds(at, now))}")


def _offsite(a: dict) -> Text:
    """Age of the last good offsite copy; '-' when the host keeps none."""
    from rich.text import Text

    if not a.get("offsite_interval_s") and not a.get("last_offsite_at"):
        return _shared("-", "dim")
    if not a.get("last_offsite_at"):
        return _shared("never", "red")
    bad = a.get("last_offsite_result") not in (None, "ok")
    text = human_age(a.get("last_offsite_age_s"))
    return Text(
        text + (f" ({a['last_offsite_result']})" if bad else ""),
        "yellow" if bad else "",
    )


def _escrow(a: dict, now: datetime) -> Text:
    """When the escrowed passphrase + key last opened the repo; never proven is flagged."""
    from rich.text import Text

    if not a.get("last_escrow_at"):
        failed = a.get("last_escrow_result") == "fail"
        return _shared("FAILED" if failed else "never proven", "bold red")
    text = human_age(age_seconds(a["last_escrow_at"], now))
    if a.get("last_escrow_result") == "fail":
        return Text(f"FAILED (ok {text})", style="bold red")
    return Text(text, style="green")


def _repository(a: dict) -> Text:
    """Where the repository lives and what it uses: `repo1 12 MB / 5 GB`; on the host's own
    disk it is flagged (it dies with the host)."""
    from rich.text import Text

    if not a.get("repository_path"):
        return _shared("-", "dim")
    used = human_size(a.get("repository_used_bytes"))
    if not a.get("repository_server"):
        return Text(f"on host {used}", style="yellow")
    quota = a.get("repository_quota_bytes")
    text = f"{a['repository_server']} {used}" + (f" / {human_size(quota)}" if quota else "")
    full = quota and (a.get("repository_used_bytes") or 0) >= 0.9 * quota
    return Text(text, style="yellow" if full else "")


def shown_agents(agents: list[dict], show_all: bool) -> list[dict]:
    """Every host of a small fleet (by name); of a large one, the worst TABLE_ROWS hosts that
    are not ok (worst first, then by name)."""
    if show_all or len(agents) <= TABLE_ROWS:
        return agents
    needy = [a for a in agents if a["status"] != "ok"]
    needy.sort(key=lambda a: SEVERITY.get(a["status"], -1))  # stable: names stay in order
    return needy[:TABLE_ROWS]


STATUS_COLUMNS = (
    Column("host"),
    Column("status"),
    Column("heartbeat"),
    Column("last backup"),
    Column("last archive"),
    Column("original", right=True),
    Column("dedup", right=True),
    Column("repository"),
    Column("check"),
    Column("drill"),
    Column("offsite"),
    Column("escrow"),
    Column("why"),
)


def _status_row(a: dict, now: datetime) -> list:
    from rich.text import Text

    return [
        a["name"],
        Text(
            a["status"] + (" *" if a.get("schedule_mismatch") else ""),
            style=STATUS_STYLE.get(a["status"], ""),
        ),
        human_age(a["last_heartbeat_age_s"]),
        human_age(a["last_backup_age_s"]),
        cell(a["last_archive"] or "-"),  # agent text: never markup, no control characters
        human_size(a["original_size"]),
        human_size(a["deduplicated_size"]),
        _repository(a),
        _result(a["last_check_at"], a["last_check_result"], now),
        _result(a["last_drill_at"], a["last_drill_result"], now),
        _offsite(a),
        _escrow(a, now),
        "; ".join(a.get("reasons") or []) or "-",
    ]


def render_status(out: Console, report: dict, show_all: bool = False) -> None:
    from rich.filesize import decimal
    from rich.table import Table

    from saveos_cli.columns import is_long, print_columns

    now = iso(report["at"] or report["generated_at"])
    agents = report["agents"]
    shown = shown_agents(agents, show_all)
    caption = None
    if len(shown) < len(agents):
        caption = (
            f"{len(shown)} of {len(agents):,} hosts: those not ok, worst first"
            " (--all for every host, --json for the data)"
        )
    rows = [_status_row(a, now) for a in shown]
    if is_long(rows):
        print_columns(out, "SaveOS fleet", STATUS_COLUMNS, rows, caption)
    else:
        table = Table(title="SaveOS fleet", title_justify="left", caption=caption)
        for col in STATUS_COLUMNS:
            table.add_column(
                col.header,
                justify="right" if col.right else "left",
                no_wrap=col.header in ("host", "status"),  # the fields people grep for stay whole
            )
        for row in rows:
            table.add_row(*row)
        out.print(table)
    totals = report["totals"]
    counts = ", ".join(
        f"[{STATUS_STYLE.get(s, '')}]{n} {s}[/]"
        for s, n in sorted(totals["by_status"].items())
        if n
    )
    out.print(
        f"{totals['agents']} agent(s): {counts or 'none'} · original"
        f" {decimal(totals['original_size'])} · deduplicated {decimal(totals['deduplicated_size'])}"
    )
    alarms = report["alarms"]
    if alarms:
        named = ", ".join(alarms[:NAMED_ALARMS])
        more = f" and {len(alarms) - NAMED_ALARMS:,} more" if len(alarms) > NAMED_ALARMS else ""
        out.print(f"[bold red]needs attention ({len(alarms):,}):[/] {named}{more}")
    mismatched = [a["name"] for a in agents if a.get("schedule_mismatch")]
    if mismatched:
        out.print(
            f"[yellow]* declared a schedule other than the provisioned one[/] (the provisioned"
            f" one holds): {', '.join(mismatched[:NAMED_ALARMS])}"
        )


def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (stable keys).")
    ] = False,
    svg: Annotated[
        Path | None, typer.Option("--svg", metavar="FILE", help="Also write it as SVG.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", metavar="FILE", help="Also write it as HTML."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="ISO",
            help="Evaluate the status as of this instant (what-if).",
        ),
    ] = None,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help=f"Show every host; past {TABLE_ROWS} hosts the table shows those not ok, worst"
            " first.",
        ),
    ] = False,
) -> None:
    """The fleet from the API: one row per agent, totals under it.

    Exit codes: 0 no host overdue / failing / silent / locked / tampered, 1 usage or internal
    error (API unreachable, bad token), 2 some host is overdue, failing, silent, locked or
    tampered.
    """
    when = parse_when(at)
    with api() as client:
        report = status_report(client.fleet_status(at=when), when)
    if as_json:
        typer.echo(report_json(report))
    if svg or html or not as_json:
        from rich.console import Console

        # Record what the terminal shows; when stdout carries JSON, render off-screen only.
        out = console() if not as_json else Console(file=io.StringIO(), width=140)
        out.record = bool(svg or html)
        render_status(out, report, show_all)
        for path, save in ((svg, out.save_svg), (html, out.save_html)):
            if path:
                try:
                    save(
                        str(path),
                        clear=False,
                        **({"title": "SaveOS fleet"} if save == out.save_svg else {}),
                    )
                except OSError as exc:
                    raise SaveOSError(f"cannot write {path}: {exc.strerror}.") from exc
    raise typer.Exit(report["exit_code"])


def register(app: typer.Typer) -> None:
    app.command()(status)
