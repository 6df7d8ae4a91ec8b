"""`saveos agents list|revoke|rotate`: the agents the API knows and their tokens."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from typing import Annotated

import typer

from saveos_cli.commands._common import Inventory, api, console, run_fleet_playbook
from saveos_cli.errors import EXIT_OK
from saveos_cli.safe_text import cell

app = typer.Typer(help="Agents registered in the API and their tokens.", no_args_is_help=True)

AGENT_KEYS = (
    "id",
    "name",
    "labels",
    "agent_version",
    "borg_version",
    "os",
    "backup_interval_s",
    "backup_grace_s",
    "heartbeat_interval_s",
    "created_at",
    "last_heartbeat",
    "last_seen",  # deprecated: the same as last_heartbeat
    "decommissioned_at",
)


# A page of the API's agent list: big enough that 10,000 agents are ten requests, small enough
# that neither side holds the whole fleet's JSON at once.
API_PAGE = 1000
TABLE_PAGE = 50


def _pages(client, offset: int, limit: int | None) -> Iterator[dict]:
    """The API's pages of agents from `offset`, at most `limit` agents in all (None: every one)."""
    sent = 0
    while limit is None or sent < limit:
        want = API_PAGE if limit is None else min(API_PAGE, limit - sent)
        page = client.agents_page(want, offset + sent)
        yield page
        sent += len(page["agents"])
        if len(page["agents"]) < want:
            return


def _json_lines(client, offset: int, limit: int | None) -> Iterator[str]:
    """The text of json.dumps({"agents": [...], "total": N}, indent=2), written as the pages
    arrive: `--json` on a large fleet starts printing at once and keeps one page in memory."""
    first, total = True, 0
    yield '{\n  "agents": ['
    for page in _pages(client, offset, limit):
        total = page["total"]
        for agent in page["agents"]:
            text = json.dumps({k: agent.get(k) for k in AGENT_KEYS}, indent=2)
            yield ("\n" if first else ",\n") + textwrap.indent(text, "    ")
            first = False
    yield ("]" if first else "\n  ]") + f',\n  "total": {total}\n}}\n'


@app.command("list")
def list_agents(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            help=f"At most this many agents (the table's default: {TABLE_PAGE}; --json: all).",
        ),
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many first.")] = 0,
    show_all: Annotated[bool, typer.Option("--all", help="Every agent in the table.")] = False,
) -> None:
    """List the agents by name, a page at a time (exit 0; 1 when the API is unreachable or the
    token is refused). `--json` holds every agent unless --limit says otherwise."""
    with api() as client:
        if as_json:
            for chunk in _json_lines(client, offset, limit):
                sys.stdout.write(chunk)
            sys.stdout.flush()
            return
        if show_all:
            limit = None
        elif limit is None:
            limit = TABLE_PAGE
        agents: list[dict] = []
        total = 0
        for page in _pages(client, offset, limit):
            total = page["total"]
            agents.extend(page["agents"])
    from rich.table import Table

    from saveos_cli.columns import Column, is_long, print_columns

    if agents:
        title = f"agents {offset + 1}-{offset + len(agents)} of {total}"
    else:
        title = f"no agents from {offset + 1} (of {total})"
    headers = ("id", "name", "agent", "borg", "os", "last heartbeat", "decommissioned")
    rows = [
        [
            cell(v)  # agent text: never markup, control characters escaped
            for v in (
                a["id"],
                a["name"],
                a.get("agent_version") or "-",
                a.get("borg_version") or "-",
                a.get("os") or "-",
                a.get("last_heartbeat") or "never",
                a.get("decommissioned_at") or "",
            )
        ]
        for a in agents
    ]
    if is_long(rows):
        print_columns(console(), title, [Column(h) for h in headers], rows)
    else:
        table = Table(title=title, title_justify="left")
        for col in headers:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        console().print(table)
    shown_to = offset + len(agents)
    if shown_to < total and agents:
        console().print(
            f"{total - shown_to} more: --offset {shown_to} for the next page, --all for every one."
        )


@app.command()
def revoke(
    host: Annotated[str, typer.Argument(help="The agent's inventory name.")],
) -> None:
    """Revoke every token of HOST: its agent can no longer talk to the API until redeployed."""
    with api() as client:
        agent = client.agent_by_name(host)
        count = client.revoke_tokens(agent["id"])
    console().print(f"revoked {count} token(s) of {agent['name']}.")


@app.command()
def rotate(
    host: Annotated[str, typer.Argument(help="The agent's inventory name.")],
    inventory: Inventory,
) -> None:
    """Give HOST a new token: revoke the old ones, then deploy to HOST, which provisions a new one.

    Exit codes: 0 rotated, 1 usage or internal error, 2 the deploy to HOST failed (the old token
    is revoked either way; re-run to finish).
    """
    from saveos_cli.runner import check_inventory

    check_inventory(inventory)
    with api() as client:
        agent = client.agent_by_name(host)
        count = client.revoke_tokens(agent["id"])
    console().print(f"revoked {count} token(s) of {agent['name']}; deploying a new one.")
    code, _ = run_fleet_playbook("deploy.yml", inventory, title=f"rotate {host}", limit=host)
    if code == EXIT_OK:
        console().print(f"{host} has a new token.")
    raise typer.Exit(code)
