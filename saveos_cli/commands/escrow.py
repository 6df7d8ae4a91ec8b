"""`saveos escrow verify`: prove, per host, that the controller's escrowed passphrase and key open
its repository (read-only), and record each proof in the API."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from saveos_cli import recovery
from saveos_cli.commands._common import Inventory, Limit, api, console, err_console
from saveos_cli.errors import EXIT_FLEET, EXIT_OK, SaveOSError
from saveos_cli.inventory_hosts import backed_up, load_hosts


class Method(StrEnum):
    auto = "auto"
    live = "live"
    offsite = "offsite"


escrow_app = typer.Typer(help="Escrowed repository passphrases and keys.", no_args_is_help=True)


@escrow_app.command("verify")
def escrow_verify(
    inventory: Inventory,
    limit: Limit = None,
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="offsite: open the S3 copy with the escrowed key + passphrase; live: borg list "
            "over SSH with the escrowed passphrase; auto: offsite when configured.",
        ),
    ] = Method.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Record results in the API.")
    ] = True,
) -> None:
    """Prove, per host, that the escrowed passphrase and key open its repository (read-only).

    Exit codes: 0 every host proven, 1 usage or internal error, 2 some host failed.
    """
    from rich.markup import escape
    from rich.table import Table

    everyone = {h.name: h for h in load_hosts(inventory)}
    results = [
        recovery.verify_escrow(host, method.value, everyone)
        for host in backed_up(load_hosts(inventory, limit))
    ]
    if report:
        try:
            _report_proofs(results)
        except SaveOSError as exc:  # the proofs stand; say they were not recorded
            err_console().print(
                f"[yellow]escrow results not recorded in the API:[/] {escape(exc.message)}"
            )
    failed = [r["host"] for r in results if r["result"] != "ok"]
    if as_json:
        console().print_json(json.dumps({"results": results, "failed": failed}))
    else:
        table = Table(title="escrow proof", title_justify="left")
        for col in ("host", "method", "result", "archives", "seconds", "message"):
            table.add_column(col)
        for r in results:
            style = "green" if r["result"] == "ok" else "bold red"
            table.add_row(
                r["host"],
                r["method"],
                f"[{style}]{r['result']}[/]",
                "-" if r["archives"] is None else str(r["archives"]),
                f"{r['duration_s']:.1f}",
                escape(r["message"]),
            )
        console().print(table)
        if failed:
            err_console().print(f"[bold red]escrow NOT proven for:[/] {', '.join(failed)}")
    raise typer.Exit(EXIT_FLEET if failed else EXIT_OK)


def _report_proofs(results: list[dict]) -> None:
    with api() as client:
        for res in results:
            res["reported"] = False
            try:
                agent = client.agent_by_name(res["host"])
            except SaveOSError as exc:
                res["report_error"] = exc.message
                continue
            proof = {k: res[k] for k in ("started_at", "finished_at", "method", "result")}
            proof["message"] = res["message"][:60000]
            if res["archives"] is not None:
                proof["archives"] = res["archives"]
            client.record_escrow_proof(agent["id"], proof)
            res["reported"] = True


def register(app: typer.Typer) -> None:
    app.add_typer(escrow_app, name="escrow")
