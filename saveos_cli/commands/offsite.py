"""`saveos recover`: bring a dead host's files back onto another host, from its repository server
or else its offsite copy, and verify every file (`saveos escrow verify`: commands/escrow.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from saveos_cli import recovery
from saveos_cli.commands._common import Inventory, Limit, console, err_console, parse_when
from saveos_cli.errors import EXIT_FLEET, EXIT_OK, SaveOSError
from saveos_cli.inventory_hosts import backed_up, load_hosts

offsite_app = typer.Typer(help="The offsite copies in S3.", no_args_is_help=True)


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
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="ISO",
            help="The offsite copy as it stood at this instant (S3 object versions): what was "
            "uploaded later, tampered or pruned, does not count.",
        ),
    ] = None,
    method: Annotated[
        recovery.Method,
        typer.Option(
            "--method",
            help="server: from the repository server; offsite: from the offsite copy; auto: "
            "the server while it answers, else the offsite copy (always with --at).",
        ),
    ] = recovery.Method.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Disaster recovery: restore --from's files onto --onto from its repository server (a
    temporary grant for a key made on --onto, revoked afterwards) or, when that server is lost
    or the host has none, from its offsite copy (fetched, opened with the escrowed key; a copy
    the repository server made is fetched by the controller, which holds its S3 credentials);
    verify every file's sha256, print the RTO.

    Exit codes: 0 recovered and verified, 1 usage or internal error, 2 recovery failed.
    """
    from rich.markup import escape

    say = (lambda _m: None) if as_json else (lambda m: console().print(escape(m)))
    # bad input exits 1 before anything runs; a failure on the hosts exits 2
    result = recovery.recover(
        inventory, source, onto, target, archive=archive, paths=paths, keep_repo=keep_repo,
        at=parse_when(at), method=method, log=say,
    )  # fmt: skip
    if as_json:
        console().print_json(json.dumps(result))
    elif result["status"] == "ok":
        console().print(
            f"[green]recovered[/] {result['files_verified']} file(s) of {result['archive']} from "
            f"{source}'s {escape(_where(result))} onto {onto}:{target}, sha256 verified · "
            f"[bold]RTO {result['rto_s']:.1f}s[/]"
        )
    else:
        err_console().print(
            f"[bold red]recovery NOT verified:[/] {len(result['files_mismatched'])} mismatched "
            f"({', '.join(result['files_mismatched'][:10])}) · RTO {result['rto_s']:.1f}s"
        )
    raise typer.Exit(EXIT_OK if result["status"] == "ok" else EXIT_FLEET)


def _where(result: dict) -> str:
    if result["method"] == "server":
        return f"repository on {result['server']}"
    return f"offsite copy {result['offsite']}" + (f" as of {result['at']}" if result["at"] else "")


@offsite_app.command("verify")
def offsite_verify(
    inventory: Inventory,
    limit: Limit = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Prove, per host, that its offsite copy cannot be deleted: the bucket keeps versions and
    has Object Lock on, and every current object is locked in the declared mode (read-only,
    from the controller, with the credentials file the inventory names: the repository
    server's for the copies it makes, else the host's).

    Exit codes: 0 every copy proven locked, 1 usage or internal error, 2 some copy is not.
    """
    from rich.markup import escape
    from rich.table import Table

    everyone = {h.name: h for h in load_hosts(inventory)}
    results = []
    for host in backed_up(load_hosts(inventory, limit)):
        try:
            settings = recovery.offsite_settings(host, everyone)
            if settings is None:
                results.append({"host": host.name, "status": "skipped", "objects": 0,
                                "message": "no offsite copy configured"})  # fmt: skip
                continue
            from saveos_offsite import replicate
            from saveos_offsite.settings import OffsiteError

            try:
                proof = replicate.verify(settings)
            except OffsiteError as exc:
                proof = {"status": "error", "objects": 0, "message": exc.message}
        except SaveOSError as exc:
            proof = {"status": "error", "objects": 0, "message": exc.message}
        results.append({"host": host.name, **proof})
    failed = [r["host"] for r in results if r["status"] == "error"]
    if as_json:
        console().print_json(json.dumps({"results": results, "failed": failed}, default=str))
    else:
        table = Table(title="offsite lock proof", title_justify="left")
        for col in ("host", "result", "locked", "message"):
            table.add_column(col)
        for r in results:
            style = {"ok": "green", "skipped": "dim"}.get(r["status"], "bold red")
            locked = f"{r.get('objects_locked', 0)}/{r.get('objects', 0)}"
            table.add_row(r["host"], f"[{style}]{r['status']}[/]", locked, escape(r["message"]))
        console().print(table)
        if failed:
            err_console().print(f"[bold red]offsite copy NOT locked for:[/] {', '.join(failed)}")
    raise typer.Exit(EXIT_FLEET if failed else EXIT_OK)


def register(app: typer.Typer) -> None:
    app.add_typer(offsite_app, name="offsite")
    app.command()(recover)
