"""`saveos ca init|renew|show`: the fleet's CA and the API server's certificate."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from saveos_cli import config
from saveos_cli.errors import SaveOSError

app = typer.Typer(help="The fleet's TLS CA and the API server's certificate.", no_args_is_help=True)

Names = Annotated[
    list[str] | None,
    typer.Option(
        "--name",
        "-n",
        help="A DNS name or IP address agents use to reach the API (repeat). Default: localhost,"
        " this host's names, 127.0.0.1, ::1, and the host of SAVEOS_API_URL.",
    ),
]
Directory = Annotated[
    Path | None,
    typer.Option("--dir", help="Where the files go (default $SAVEOS_DATA_DIR/tls)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _paths(directory: Path | None):
    from saveos_cli.tls import Paths

    return Paths(directory or config.tls_dir())


def _sans(values: list[str] | None) -> tuple[list[str], list[str]]:
    from urllib.parse import urlsplit

    from saveos_cli.tls import default_names, split_sans

    if values:
        return split_sans(values)
    wanted = [*default_names(), "127.0.0.1", "::1"]
    host = urlsplit(os.environ.get("SAVEOS_API_URL", "")).hostname
    if host and host not in wanted:
        wanted.append(host)
    return split_sans(wanted)


def _print(info: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"CA:     {info['ca']} (sha256 {info['ca_sha256']})")
    if "server_cert" in info:
        typer.echo(f"server: {info['server_cert']} until {info['not_after']}")
        typer.echo(f"        names {', '.join(info['names']) or '-'}")
        typer.echo(f"        addresses {', '.join(info['addresses']) or '-'}")


@app.command()
def init(
    names: Names = None,
    directory: Directory = None,
    new_ca: Annotated[
        bool,
        typer.Option(
            "--new-ca",
            help="Replace an existing CA (then re-deploy: hosts trust only it).",
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Make the CA (unless there is one) and a server certificate signed by it."""
    from saveos_cli.tls import issue_server, make_ca

    paths = _paths(directory)
    dns, ips = _sans(names)
    if new_ca or not paths.ca_cert.exists():
        make_ca(paths, f"SaveOS CA ({dns[0] if dns else ips[0]})")
        typer.echo(f"created the CA in {paths.dir}", err=True)
    else:
        typer.echo(f"kept the CA in {paths.dir}", err=True)
    _print(issue_server(paths, dns, ips), as_json)
    typer.echo(
        "Restart `saveos server` to serve it; `saveos deploy` copies the CA to every host.",
        err=True,
    )


@app.command()
def renew(
    names: Names = None,
    directory: Directory = None,
    as_json: AsJson = False,
) -> None:
    """Issue a new server certificate from the same CA (same names unless --name is given)."""
    from saveos_cli.tls import describe, issue_server, split_sans

    paths = _paths(directory)
    if names:
        dns, ips = split_sans(names)
    elif paths.server_cert.is_file():
        old = describe(paths)
        dns, ips = old["names"], old["addresses"]
    else:
        raise SaveOSError(f"no server certificate in {paths.dir}.", hint="Run `saveos ca init`.")
    _print(issue_server(paths, dns, ips), as_json)
    typer.echo("Restart `saveos server` to serve the new certificate.", err=True)


@app.command()
def show(
    directory: Directory = None,
    as_json: AsJson = False,
) -> None:
    """The CA's fingerprint and the server certificate's names and expiry."""
    from saveos_cli.tls import describe

    paths = _paths(directory)
    if not paths.ca_cert.is_file():
        raise SaveOSError(f"no CA in {paths.dir}.", hint="Run `saveos ca init`.")
    _print(describe(paths), as_json)
