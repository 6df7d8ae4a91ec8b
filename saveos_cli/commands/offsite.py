"""`saveos recover`: bring a dead host's files back onto another host, from its repository server
or else its offsite copy, and verify every file (`saveos escrow verify`: commands/escrow.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from saveos_cli import recovery
from saveos_cli.commands._common import Inventory, console, err_console
from saveos_cli.errors import EXIT_FLEET, EXIT_OK


def recover(
    *,  # keyword-only: the required --target follows options with defaults, in the help's order
    inventory: Inventory,
    source: Annotated[str, typer.Option("--from", help="The lost host (inventory name).")],
    onto: Annotated[str, typer.Option("--onto", help="The host to recover onto (inventory name).")],
    archive: Annotated[
        str, typer.Option("--archive", help="Archive name, or 'latest'.")
    ] = "latest",
    paths: Annotated[
        list[str] | None,
        typer.Option("--path", help="Path inside the archive (repeatable); default everything."),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="Empty directory on --onto to extract into.")
    ],
    keep_repo: Annotated[
        bool, typer.Option("--keep-repo", help="Keep the fetched repository on --onto.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Disaster recovery: restore --from's files onto --onto from its repository server (a
    temporary grant for a key made on --onto, revoked afterwards) or else from its offsite copy
    (fetched, opened with the escrowed key); verify every file's sha256, print the RTO.

    Exit codes: 0 recovered and verified, 1 usage or internal error, 2 recovery failed.
    """
    from rich.markup import escape

    say = (lambda _m: None) if as_json else (lambda m: console().print(escape(m)))
    # bad input exits 1 before anything runs; a failure on the hosts exits 2
    result = recovery.recover(
        inventory, source, onto, target, archive=archive, paths=paths, keep_repo=keep_repo,
        log=say,
    )  # fmt: skip
    if as_json:
        console().print_json(json.dumps(result))
    elif result["status"] == "ok":
        console().print(
            f"[green]recovered[/] {result['files_verified']} file(s) of {result['archive']} from "
            f"{source} onto {onto}:{target}, sha256 verified · [bold]RTO {result['rto_s']:.1f}s[/]"
        )
    else:
        err_console().print(
            f"[bold red]recovery NOT verified:[/] {len(result['files_mismatched'])} mismatched "
            f"({', '.join(result['files_mismatched'][:10])}) · RTO {result['rto_s']:.1f}s"
        )
    raise typer.Exit(EXIT_OK if result["status"] == "ok" else EXIT_FLEET)


def register(app: typer.Typer) -> None:
    app.command()(recover)
