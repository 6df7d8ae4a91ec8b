"""`saveos agents list|revoke|rotate`: the agents the API knows and their tokens."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from saveos_cli.commands._common import INVENTORY_OPTION, api, console, run_fleet_playbook
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
    "last_seen",
    "decommissioned_at",
)


@app.command("list")
def list_agents(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the agents (exit 0; 1 when the API is unreachable or the token is refused)."""
    with api() as client:
        agents = sorted(client.agents(), key=lambda a: a["name"])
    if as_json:
        doc = {"agents": [{k: a.get(k) for k in AGENT_KEYS} for a in agents]}
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(agents)} agent(s)", title_justify="left")
    for col in ("id", "name", "agent", "borg", "os", "last seen", "decommissioned"):
        table.add_column(col)
    for a in agents:
        table.add_row(
            str(a["id"]),
            a["name"],
            cell(a.get("agent_version") or "-"),  # agent text: never markup
            cell(a.get("borg_version") or "-"),
            cell(a.get("os") or "-"),
            a.get("last_seen") or "never",
            a.get("decommissioned_at") or "",
        )
    console().print(table)


@app.command()
def revoke(host: str = typer.Argument(..., help="The agent's inventory name.")) -> None:
    """Revoke every token of HOST: its agent can no longer talk to the API until redeployed."""
    with api() as client:
        agent = client.agent_by_name(host)
        count = client.revoke_tokens(agent["id"])
    console().print(f"revoked {count} token(s) of {agent['name']}.")


@app.command()
def rotate(
    host: str = typer.Argument(..., help="The agent's inventory name."),
    inventory: Path = INVENTORY_OPTION,
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
