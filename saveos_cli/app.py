"""The `saveos` command: wires the command groups together; domain errors become exit codes."""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer

from saveos_cli import __version__, config
from saveos_cli.errors import EXIT_ERROR, SaveOSError


@functools.cache
def err_console():
    """Rich for error output, loaded only when there is an error to print."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


HELP = (
    "SaveOS: centralised BorgBackup for a fleet of Linux hosts, driven by Ansible.\n\n"
    "The admin token comes from SAVEOS_ADMIN_TOKEN, a 0600 ~/.config/saveos/cli.json or"
    ' /etc/saveos/cli.json ({"admin_token": ..., "api_url": ...}), or'
    " $SAVEOS_DATA_DIR/admin.token; never from an option.\n\n"
    "Exit codes: 0 all ok; 1 usage or internal error (API unreachable, bad token, missing"
    " inventory, unknown host); 2 some hosts failed or were unreachable (deploy, backup, restore,"
    " check, drill) or are overdue / failing / silent / locked (status); 130 interrupted."
)

app = typer.Typer(
    name="saveos",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

STATE: dict = {"verbose": False, "api_url": None}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"saveos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and more detail.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            metavar="URL",
            help="SaveOS API base URL (env SAVEOS_API_URL, default http://127.0.0.1:8000).",
        ),
    ] = None,
) -> None:
    STATE["verbose"] = verbose
    STATE["api_url"] = api_url
    config.OPTIONS["api_url"] = api_url


def _register() -> None:
    from saveos_cli.commands import (
        agents,
        alerts,
        ca,
        escrow,
        fleet,
        offsite,
        retention,
        server,
        snapshots,
        status,
        tokens,
    )

    fleet.register(app)
    status.register(app)
    snapshots.register(app)
    offsite.register(app)
    escrow.register(app)
    retention.register(app)
    app.add_typer(agents.app, name="agents")
    app.add_typer(alerts.app, name="alerts")
    app.add_typer(server.app, name="server")
    app.add_typer(ca.app, name="ca")
    app.add_typer(tokens.app, name="tokens")
    app.command("audit")(tokens.audit)
    _register_addons()


def _register_addons() -> None:
    """Command groups other packages add (`saveos.commands` entry points): the lab, test and demo
    infrastructure, is one (saveos_lab.cli); the product never imports it."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="saveos.commands"):
        try:
            group = entry.load()
        except ImportError:  # an add-on whose package is gone: the product runs without it
            continue
        app.add_typer(group, name=entry.name)


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        # Not standalone: click would exit 2 on usage errors, and 2 means "hosts failed" here.
        rc = app(args=argv, standalone_mode=False)
    except typer.TyperException as exc:  # usage errors (typer's vendored click)
        show = getattr(exc, "show", None)
        if show:
            show()
        else:
            err_console().print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except typer.Abort:
        err_console().print("[yellow]interrupted[/]")
        sys.exit(130)
    except SaveOSError as exc:
        _say_error("error", exc.message)
        if exc.hint:
            err_console().print(f"[dim]{escape(exc.hint)}[/]", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console().print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback unless -v
        _say_error("internal error", str(exc))
        sys.exit(EXIT_ERROR)
    sys.exit(rc if isinstance(rc, int) else 0)


def _say_error(label: str, message: str) -> None:
    """The line a failed command ends with; under -v the traceback of the error in hand first."""
    if STATE["verbose"]:
        err_console().print_exception()
    err_console().print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
