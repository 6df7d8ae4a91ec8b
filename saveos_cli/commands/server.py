"""`saveos server`: serve the API (default), apply migrations, or prepare the data directory."""

from __future__ import annotations

import secrets

import typer

from saveos_cli.errors import SaveOSError

app = typer.Typer(help="Run the SaveOS API server.", invoke_without_command=True)


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
    host: str = typer.Option("127.0.0.1", envvar="SAVEOS_HOST", help="Address to listen on."),
    port: int = typer.Option(8000, envvar="SAVEOS_PORT", min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, envvar="SAVEOS_WORKERS", min=1, max=64, help="Processes."),
) -> None:
    """Serve the API with uvicorn (migrations are applied first)."""
    if ctx.invoked_subcommand is not None:
        return
    # Check the cheap things before importing the server stack.
    settings = _settings()
    _config_errors(settings.validate_secrets)
    from saveos_api.alerts.service import settings_channels

    _config_errors(settings_channels, settings)  # a bad declared channel URL, before serving
    import uvicorn

    from saveos_api import migrations
    from saveos_api.main import create_app

    _config_errors(migrations.upgrade, settings.effective_database_url)
    if workers == 1:
        application = _config_errors(create_app, settings, migrate=False)
        uvicorn.run(application, host=host, port=port, log_level="info", access_log=False)
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
        )


def _best(module: str) -> str:
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return module
    typer.echo(f"warning: {module} is not installed (pip install 'uvicorn[standard]')", err=True)
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
    show: bool = typer.Option(False, "--show", help="Also print the admin token."),
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
