"""`saveos alerts list|test` and `saveos alerts channel add|list|remove`: who hears of trouble."""

from __future__ import annotations

import enum
import getpass
import json
import sys
from typing import Annotated

import typer

from saveos_api.alerts.levels import LEVELS
from saveos_cli.commands._common import api, console, err_console
from saveos_cli.errors import EXIT_ERROR, SaveOSError

app = typer.Typer(
    help="Notifications through Apprise: channels, recent flips and deliveries, a test.",
    no_args_is_help=True,
)
channel_app = typer.Typer(help="Where notifications go (Apprise URLs).", no_args_is_help=True)
app.add_typer(channel_app, name="channel")

MinStatus = enum.Enum("MinStatus", {level: level for level in LEVELS[1:]}, type=str)


def _read_url(url: str | None) -> str:
    """The URL from stdin (or a prompt that does not echo) unless given; '-' means stdin."""
    if url not in (None, "-"):
        err_console().print(
            "[yellow]warning:[/] the URL was on the command line, where other local users can "
            "read it; next time pass '-' and give it on stdin.",
            highlight=False,
        )
        return url
    if url is None and sys.stdin.isatty():
        value = getpass.getpass("Apprise URL (not echoed): ")
    else:
        value = sys.stdin.readline()
    value = value.strip()
    if not value:
        raise SaveOSError("no channel URL given (pass it on stdin, or as the argument).")
    return value


@channel_app.command("add")
def channel_add(
    url: Annotated[
        str | None,
        typer.Argument(
            help="Apprise URL; '-' or nothing: read it from stdin (keeps it out of ps)."
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            metavar="KEY=VALUE",
            help="Only hosts with this label (repeatable; group=NAME: an inventory group).",
        ),
    ] = None,
    min_status: Annotated[
        MinStatus, typer.Option("--min-status", help="Notify from this status up.")
    ] = MinStatus("overdue"),
    digest: Annotated[
        bool,
        typer.Option("--digest", help="One digest a day instead of a message per flip."),
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="A name to show for it.")] = None,
) -> None:
    """Add a channel: the API checks the URL with Apprise and stores it encrypted."""
    from saveos_api.alerts.channels import ChannelError, parse_labels

    try:
        selector = parse_labels(label or [])
    except ChannelError as exc:
        raise SaveOSError(f"--label: {exc}.") from None
    body = {
        "url": _read_url(url),
        "labels": selector,
        "min_status": min_status.value,
        "digest": digest,
        "name": name,
    }
    with api() as client:
        channel = client.add_alert_channel(body)
    console().print(f"added channel {channel['id']}: {_describe(channel)}", highlight=False)


@channel_app.command("list")
def channel_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The channels (URLs redacted)."""
    with api() as client:
        channels = client.alert_channels()
    if as_json:
        typer.echo(json.dumps({"channels": channels}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(channels)} channel(s)", title_justify="left")
    for col in ("id", "channel", "hosts", "from", "mode", "source", "enabled"):
        table.add_column(col)
    for c in channels:
        table.add_row(
            str(c["id"]),
            c.get("name") or c["url"],
            _selector(c["labels"]),
            c["min_status"],
            "digest" if c["digest"] else "each flip",
            c["source"],
            "no" if c.get("disabled_at") else "yes",
        )
    console().print(table)


@channel_app.command("remove")
def channel_remove(
    channel_id: Annotated[int, typer.Argument(help="The channel's id.", min=1)],
):
    """Remove a channel added with `channel add` (those from the settings are removed there)."""
    with api() as client:
        client.remove_alert_channel(channel_id)
    console().print(f"removed channel {channel_id}.")


@app.command("test")
def test(
    channel: Annotated[
        int | None,
        typer.Option("--channel", min=1, help="Only this channel (default: all)."),
    ] = None,
) -> None:
    """Send a test notification now; exit 1 when a channel did not take it."""
    with api() as client:
        results = client.test_alerts(channel)
    failed = 0
    for r in results:
        if r["ok"]:
            console().print(f"[green]sent[/] to {r['channel']}", highlight=False)
        else:
            failed += 1
            console().print(f"[red]failed[/] {r['channel']}: {r['error']}", highlight=False)
    if failed:
        raise typer.Exit(EXIT_ERROR)


@app.command("list")
def list_alerts(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many of each.")] = 20,
    host: Annotated[str | None, typer.Option("--host", help="Only this host's flips.")] = None,
) -> None:
    """Recent status changes (flips) and notification deliveries, newest first."""
    with api() as client:
        flips = client.flips(limit, host)
        deliveries = client.deliveries(limit)
    if as_json:
        typer.echo(json.dumps({"flips": flips, "deliveries": deliveries}, indent=2))
        return
    from rich.table import Table

    out = console()
    table = Table(title=f"last {len(flips)} flip(s)", title_justify="left")
    for col in ("at", "host", "from", "to", "reason"):
        table.add_column(col)
    for f in flips:
        table.add_row(
            f["at"],
            f["host"],
            f["from_status"] or "-",
            f["to_status"],
            f["reason"] or "",
        )
    out.print(table)
    table = Table(title=f"last {len(deliveries)} delivery(ies)", title_justify="left")
    for col in ("id", "created", "channel", "kind", "title", "state", "tries", "error"):
        table.add_column(col)
    for d in deliveries:
        table.add_row(
            str(d["id"]),
            d["created_at"],
            d["channel"],
            d["kind"],
            d["title"],
            d["state"],
            str(d["attempts"]),
            d.get("last_error") or "",
        )
    out.print(table)


def _selector(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "all"


def _describe(c: dict) -> str:
    mode = "daily digest" if c["digest"] else f"{c['min_status']} and worse"
    return f"{c.get('name') or c['url']} ({mode}, hosts: {_selector(c['labels'])})"
