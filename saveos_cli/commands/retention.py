"""`saveos prune` and `saveos repo rollback|revoke`: central retention from the controller."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from saveos_cli.commands._common import Inventory, Limit, api, console, err_console
from saveos_cli.errors import EXIT_FLEET, EXIT_OK

repo_app = typer.Typer(
    help="Repositories on the repository servers: roll back after tampering, revoke a host.",
    no_args_is_help=True,
)


def prune(
    inventory: Inventory,
    limit: Limit = None,
    verify_data: Annotated[
        bool | None,
        typer.Option(
            "--verify-data/--no-verify-data",
            help="borg check --verify-data now (default: when saveos_prune_verify_data_interval_s, "
            "30 days, has passed since the last one).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Central retention: per repository on a repository server, verify that nothing was deleted
    that SaveOS did not delete, borg check, prune with the host's retention, compact; with the
    controller's own full-access key and the escrowed passphrase. Tampering found: nothing is
    pruned, the host's status becomes `tampered` (see `saveos repo rollback`). Where the
    repository server has saveos_repo_server_offsite_bucket, the server then copies each
    repository left good to S3 (never a tampered one).

    Exit codes: 0 every repository maintained (and copied), 1 usage or internal error, 2 some
    host tampered or failed, or its offsite copy failed.
    """
    from rich.markup import escape

    from saveos_cli.retention import fleet

    say = (lambda _m: None) if as_json else (lambda m: err_console().print(escape(m)))
    t0 = time.monotonic()
    with api() as client:
        results = fleet.prune(inventory, limit, client, verify_data, log=say)
    wall = round(time.monotonic() - t0, 2)
    bad = [
        r["host"]
        for r in results
        if r["result"] not in ("ok", "skipped") or (r.get("offsite") or {}).get("result") == "error"
    ]
    if as_json:
        doc = {"results": results, "failed": bad, "wall_s": wall}
        console().print_json(json.dumps(doc, default=str))
    else:
        _table(results, wall)
        tampered = [r["host"] for r in results if r["result"] == "tampered"]
        if tampered:
            err_console().print(
                f"[bold red]TAMPERED, nothing pruned:[/] {', '.join(tampered)} "
                "(saveos repo rollback HOST after revoking its access)"
            )
    raise typer.Exit(EXIT_FLEET if bad else EXIT_OK)


def _table(results: list[dict], wall: float) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"central retention ({wall:.1f}s)", title_justify="left")
    for col in ("host", "result", "pruned", "kept", "offsite", "seconds", "message"):
        table.add_column(col)
    style = {"ok": "green", "skipped": "dim", "tampered": "bold white on red"}
    for r in results:
        table.add_row(
            r["host"],
            f"[{style.get(r['result'], 'bold red')}]{r['result']}[/]",
            str(len(r.get("pruned") or [])),
            "-" if r.get("archives") is None else str(r["archives"]),
            _offsite_cell(r.get("offsite")),
            f"{r.get('duration_s') or 0:.1f}",
            escape(str(r.get("message") or "")),
        )
    console().print(table)


def _offsite_cell(copy: dict | None) -> str:
    """The server's offsite copy of the repository: uploaded objects, or why none was made."""
    if not copy:
        return "-"
    if copy.get("result") == "ok":
        return f"[green]ok[/] {copy.get('objects_uploaded', 0)}/{copy.get('objects', 0)}"
    from rich.markup import escape

    style = "dim" if copy.get("result") == "skipped" else "bold red"
    return f"[{style}]{escape(str(copy.get('result')))}[/]"


@repo_app.command("rollback")
def rollback(
    host: Annotated[str, typer.Argument(help="The host whose repository was tampered with.")],
    inventory: Inventory,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Roll back although the host can still write to the repository.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Roll HOST's repository back to its last good transaction (Borg's documented procedure for
    append-only repositories): every archive the last central run left and every archive on
    record before the attack is back. The tampered state is kept aside as hard links.

    Exit codes: 0 rolled back, 1 usage or internal error, 2 refused or failed.
    """
    from rich.markup import escape

    from saveos_cli.retention import fleet

    say = (lambda _m: None) if as_json else (lambda m: err_console().print(escape(m)))
    with api() as client:
        result = fleet.rollback(inventory, host, client, force=force, log=say)
    if as_json:
        console().print_json(json.dumps(result, default=str))
    elif result["result"] == "ok":
        console().print(f"[green]{escape(host)}:[/] {escape(result['message'])}")
    else:
        err_console().print(f"[bold red]{escape(host)}:[/] {escape(result['message'])}")
    raise typer.Exit(EXIT_OK if result["result"] == "ok" else EXIT_FLEET)


@repo_app.command("revoke")
def revoke(
    host: Annotated[str, typer.Argument(help="The host to take write access from.")],
    inventory: Inventory,
) -> None:
    """Remove HOST's key line (and grants) from its repository server: it can no longer write
    to its repository. Its next `saveos deploy` gives the access back.

    Exit codes: 0 revoked, 1 usage or internal error, 2 the server refused or is unreachable.
    """
    from saveos_cli.retention import fleet

    out = fleet.revoke(inventory, host)
    console().print(f"{host}: write access revoked" + ("" if out.get("changed") else " (had none)"))


def register(app: typer.Typer) -> None:
    app.command()(prune)
    app.add_typer(repo_app, name="repo")
