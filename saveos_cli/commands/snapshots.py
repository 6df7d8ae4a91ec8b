"""A host's snapshots from the API: `saveos snapshots HOST` (table or --json), newest first."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from saveos_cli.commands._common import api, console, human_size
from saveos_cli.safe_text import cell

SNAPSHOT_KEYS = (
    "archive",
    "started_at",
    "finished_at",
    "duration_s",
    "exit_status",
    "locked",
    "rc",
    "nfiles",
    "original_size",
    "compressed_size",
    "deduplicated_size",
    "repository",
    "repo",  # deprecated: the same as repository
    "message",
    "databases",
)


def snapshots(
    host: Annotated[str, typer.Argument(help="The host's inventory name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="How many, newest first.")
    ] = 50,
) -> None:
    """List a host's snapshots (archives) as reported to the API, newest first.

    Exit codes: 0 listed, 1 usage or internal error (unknown host, API unreachable).
    """
    with api() as client:
        agent = client.agent_by_name(host)
        page = client.snapshots(agent["id"], limit=limit)
    if as_json:
        doc = {
            "host": agent["name"],
            "agent_id": agent["id"],
            "total": page["total"],
            "snapshots": [{k: s.get(k) for k in SNAPSHOT_KEYS} for s in page["snapshots"]],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{agent['name']}: {page['total']} snapshot(s)", title_justify="left")
    columns = (
        "archive",
        "finished",
        "status",
        "files",
        "original",
        "dedup",
        "duration",
    )
    with_dbs = any(s.get("databases") for s in page["snapshots"])
    for col in columns + (("databases",) if with_dbs else ()):
        table.add_column(col, justify="right" if col in ("files", "original", "dedup") else "left")
    for s in page["snapshots"]:
        table.add_row(
            cell(s.get("archive") or "-"),
            s.get("finished_at") or "-",
            Text(
                s["exit_status"] + (" (locked)" if s.get("locked") else ""),
                style={"ok": "green", "warning": "yellow"}.get(s["exit_status"], "red"),
            ),
            str(s.get("nfiles", 0)),
            human_size(s.get("original_size")),
            human_size(s.get("deduplicated_size")),
            f"{s['duration_s']:.1f}s" if s.get("duration_s") is not None else "-",
            *((_databases_cell(s.get("databases")),) if with_dbs else ()),
        )
    console().print(table)


def _databases_cell(dumps: list | None):
    """One line per dump: type/name and size, red with 'failed' when the dump did not finish."""
    from rich.text import Text

    cell = Text()
    for i, dump in enumerate(dumps or []):
        ok = dump.get("status") == "ok"
        line = f"{dump.get('type')}/{dump.get('name')} {human_size(dump.get('size'))}"
        text = ("\n" if i else "") + line + ("" if ok else " failed")
        cell.append(text, style=None if ok else "red")
    return cell if dumps else "-"


def register(app: typer.Typer) -> None:
    app.command()(snapshots)
