"""`saveos lab`: start, inspect and stop a lab of SSH hosts on this machine (see saveos_lab.lab)."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from saveos_cli.errors import EXIT_FLEET

if TYPE_CHECKING:
    from saveos_lab.lab import Lab

app = typer.Typer(
    help="A lab of real SSH hosts on loopback (namespaces + overlayfs); needs root.",
    no_args_is_help=True,
)


# The lab (and YAML) and Rich load when a lab command runs, not with every `saveos` command.
@functools.cache
def console():
    from rich.console import Console

    return Console()


def _lab(directory: Path | None, **kwargs) -> Lab:
    from saveos_lab.lab import Lab

    return Lab(directory or default_lab_dir(), **kwargs)


def default_lab_dir() -> Path:
    data_dir = os.environ.get("SAVEOS_DATA_DIR") or "~/.local/share/saveos"
    return Path(data_dir).expanduser() / "lab"


Directory = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Lab directory [default: $SAVEOS_DATA_DIR/lab].",
        show_default=False,
    ),
]


@app.command()
def up(
    hosts: Annotated[
        int, typer.Option("--hosts", "-n", help="Number of hosts, lab1..labN (1-200).")
    ] = 3,
    directory: Directory = None,
    net: Annotated[
        str, typer.Option("--net", help="Loopback /24 prefix; hosts get .11, .12…")
    ] = "127.0.0",
    port: Annotated[int, typer.Option("--port", help="SSH port every host listens on.")] = 22,
    systemd: Annotated[
        int,
        typer.Option(
            "--systemd",
            help="How many of the hosts (the last ones) boot systemd as PID 1 (systemd-nspawn over"
            " a cached Debian 12 root; the first build takes about a minute).",
        ),
    ] = 0,
    repo_servers: Annotated[
        int,
        typer.Option(
            "--repo-servers",
            help="Repository servers repo1..repoN (0-9) on .2, .3…, group saveos_repo_servers.",
        ),
    ] = 0,
) -> None:
    """Start lab1..labN (idempotent: a running lab is kept) and print the inventory path."""
    lab = _lab(directory, net=net, port=port)
    inventory = lab.up(hosts, systemd=systemd, repo_servers=repo_servers)
    for host in lab.hosts():
        console().print(
            f"  {host.name}  {host.address}:{host.port}  {host.flavour}",
            highlight=False,
        )
    console().print(f"[green]lab up:[/] {len(lab.hosts())} hosts", highlight=False)
    console().print(f"inventory: {inventory}", highlight=False, soft_wrap=True)
    console().print(f"try: ansible -i {inventory} all -m ping", highlight=False, soft_wrap=True)


@app.command()
def down(directory: Directory = None) -> None:
    """Stop every host of the lab and remove its files; harmless when no lab runs."""
    lab = _lab(directory)
    if lab.down():
        console().print(f"[green]lab down:[/] {lab.dir} cleaned up", highlight=False)
    else:
        console().print(f"no lab in {lab.dir}; nothing to do", highlight=False)


@app.command()
def status(
    directory: Directory = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the lab's hosts and whether they answer SSH; exit 2 when one does not."""
    lab = _lab(directory)
    rows = lab.status()
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif not rows:
        console().print(f"no lab in {lab.dir}", highlight=False)
    else:
        from rich.table import Table

        table = Table(title=f"SaveOS lab {lab.dir}")
        for column in ("host", "flavour", "address", "pid", "sshd", "ssh"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r.name,
                r.flavour,
                f"{r.address}:{r.port}",
                str(r.pid),
                "[green]running[/]" if r.running else "[red]gone[/]",
                "[green]answers[/]" if r.answers else "[red]no answer[/]",
            )
        console().print(table)
    if any(not r.answers for r in rows):
        raise typer.Exit(EXIT_FLEET)
