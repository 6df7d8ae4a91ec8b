"""`saveos server`: serve the API (default), apply migrations, or prepare the data directory."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer

from saveos_cli.errors import SaveOSError

app = typer.Typer(help="Run the SaveOS API server.", invoke_without_command=True)

# On SIGTERM, requests in flight get this long to finish (the slowest, a 1,000-agent provision
# batch, takes about a second). Without a bound uvicorn also waits on every idle keep-alive TLS
# connection (agents keep theirs) until its client answers close_notify, which an idle client
# never does: asyncio gives up after 30 s.
SHUTDOWN_GRACE_S = 5


def _server_stack() -> None:
    """The API needs the `server` extra; a CLI-only install says so instead of a traceback."""
    import importlib.util

    missing = [
        name
        for name in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise SaveOSError(
            f"the API server needs {', '.join(missing)}, which this installation lacks.",
            hint="Install the server extra: pip install 'saveos[server]'",
        )


def _settings():
    from pydantic import ValidationError

    from saveos_api.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "SAVEOS_" + str(err["loc"][0]).upper() if err.get("loc") else "settings"
        raise SaveOSError(f"invalid {field}: {err['msg']}") from None


def _config_errors(func, *args, **kwargs):
    """Run func, turning configuration and database-connection problems into one clear line."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    from saveos_api.settings import ConfigError

    try:
        return func(*args, **kwargs)
    except ConfigError as exc:
        raise SaveOSError(str(exc), hint="see `saveos server init --help`") from None
    except ArgumentError as exc:
        raise SaveOSError(f"invalid SAVEOS_DATABASE_URL: {exc}") from None
    except OperationalError as exc:
        raise SaveOSError(f"cannot reach the database: {str(exc.orig).strip()}") from None


@app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(envvar="SAVEOS_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="SAVEOS_PORT", min=1, max=65535, help="TCP port.")
    ] = 8000,
    workers: Annotated[
        int, typer.Option(envvar="SAVEOS_WORKERS", min=1, max=64, help="Processes.")
    ] = 1,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            envvar="SAVEOS_TLS_CERT",
            help="Server certificate (PEM). Default: $SAVEOS_DATA_DIR/tls/server.crt when present.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            envvar="SAVEOS_TLS_KEY",
            help="Its private key (PEM, 0600). Default: $SAVEOS_DATA_DIR/tls/server.key.",
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve plain HTTP even on a non-loopback address: every token crosses the"
            " network in clear. Only behind a TLS-terminating proxy on the same host.",
        ),
    ] = False,
) -> None:
    """Serve the API with uvicorn (migrations are applied first).

    HTTPS with the certificate of `saveos ca init`; plain HTTP only on a loopback address
    (or with --insecure-http)."""
    _server_stack()
    if ctx.invoked_subcommand is not None:
        return
    # Check the cheap things before importing the server stack.
    settings = _settings()
    _config_errors(settings.validate_secrets)
    from saveos_api.alerts.service import settings_channels

    _config_errors(settings_channels, settings)  # a bad declared channel URL, before serving
    tls = _tls_options(host, tls_cert, tls_key, insecure_http)
    import uvicorn

    from saveos_api import migrations
    from saveos_api.main import create_app

    _config_errors(migrations.upgrade, settings.effective_database_url)
    if workers == 1:
        application = _config_errors(create_app, settings, migrate=False)
        uvicorn.run(
            application,
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            **tls,
        )
    else:
        # Each worker builds its own app (and pool, and heartbeat writer) from the same
        # environment. uvloop + httptools (uvicorn[standard]) when installed: besides speed,
        # stock asyncio workers leave TCP_NODELAY off on accepted sockets (uvicorn #3149), so
        # every answer would wait for a delayed ACK.
        uvicorn.run(
            "saveos_api.main:app",
            host=host,
            port=port,
            workers=workers,
            loop=_best("uvloop"),
            http=_best("httptools"),
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            **tls,
        )


def _tls_options(host: str, cert: Path | None, key: Path | None, insecure_http: bool) -> dict:
    """uvicorn's TLS options, or {} for plain HTTP where that is allowed; SaveOSError else."""
    from saveos_agent.transport import is_loopback_host

    from saveos_cli.config import tls_dir

    if insecure_http:
        if not is_loopback_host(host):
            typer.secho(
                f"WARNING: --insecure-http: serving plain HTTP on {host}; every agent and admin"
                " token crosses the network IN CLEAR. Use only behind a TLS proxy on this host.",
                err=True,
                fg="red",
                bold=True,
            )
        return {}
    if cert is None and key is None and (tls_dir() / "server.crt").is_file():
        cert, key = tls_dir() / "server.crt", tls_dir() / "server.key"
    if cert is None or key is None:
        if cert is not None or key is not None:
            raise SaveOSError("give both --tls-cert and --tls-key.")
        if is_loopback_host(host):
            typer.echo(
                f"serving plain HTTP on loopback ({host}); `saveos ca init` for HTTPS",
                err=True,
            )
            return {}
        raise SaveOSError(
            f"refusing to serve plain HTTP on {host}: tokens would cross the network in clear.",
            hint="Run `saveos ca init --name <the name agents use>` (then restart), give"
            " --tls-cert/--tls-key, or --insecure-http behind a TLS proxy.",
        )
    from saveos_agent.config import check_private

    for path in (cert, key):
        if not path.is_file():
            raise SaveOSError(f"TLS file {path} does not exist.")
    try:
        check_private(str(key), "--tls-key", SaveOSError)
    except SaveOSError as exc:
        raise SaveOSError(f"TLS key {exc.message}") from None
    from saveos_cli.tls import server_context

    return {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_context_factory": server_context,
    }


def _best(module: str) -> str:
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return module
    typer.echo(
        f"warning: {module} is not installed (pip install 'uvicorn[standard]')",
        err=True,
    )
    return "auto"


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest version."""
    from saveos_api import migrations

    settings = _settings()
    _config_errors(migrations.upgrade, settings.effective_database_url)
    typer.echo(f"database at head: {_redacted(settings.effective_database_url)}")


@app.command()
def init(
    show: Annotated[bool, typer.Option("--show", help="Also print the admin token.")] = False,
) -> None:
    """Create the data directory, server secret and a 0600 admin token file if missing."""
    from saveos_api.settings import write_private

    settings = _settings()
    token_file = settings.effective_admin_token_file
    if settings.admin_token is None and not token_file.exists():
        _config_errors(write_private, token_file, "adm_" + secrets.token_urlsafe(32) + "\n")
        typer.echo(f"created admin token file {token_file}")
    else:
        typer.echo(f"admin token file {token_file} already exists")
    _config_errors(settings.validate_secrets)
    typer.echo(f"server secret: {settings.effective_secret_key_file}")
    typer.echo(f"database: {_redacted(settings.effective_database_url)}")
    if show:
        typer.echo(settings.admin_token_value)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
