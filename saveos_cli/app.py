"""The `saveos` command: wires the command groups together, turns domain errors into exit codes."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from saveos_cli import __version__
from saveos_cli.errors import EXIT_ERROR, SaveOSError

err_console = Console(stderr=True)

app = typer.Typer(
    name="saveos",
    help="SaveOS: centralised BorgBackup for a fleet of Linux hosts, driven by Ansible.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

STATE = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"saveos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and more detail."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    STATE["verbose"] = verbose


def _register() -> None:
    from saveos_cli.commands import lab, server

    app.add_typer(lab.app, name="lab")
    app.add_typer(server.app, name="server")


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=True)
    except SaveOSError as exc:
        if STATE["verbose"]:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            err_console.print(f"[dim]{exc.hint}[/]", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback unless -v
        if STATE["verbose"]:
            err_console.print_exception()
        err_console.print(f"[bold red]internal error:[/] {exc}", highlight=False)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
