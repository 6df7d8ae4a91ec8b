"""What the command modules share: config from the root options, the API client, playbook runs."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from saveos_rules import ago_text, parse_iso

from saveos_cli import config
from saveos_cli.api_client import ApiClient
from saveos_cli.errors import EXIT_FLEET, EXIT_OK, SaveOSError

if TYPE_CHECKING:
    from rich.console import Console

    from saveos_cli import progress

# Rich (and what pulls it in: progress) is imported on first use, not at start: commands that
# print JSON, such as `saveos status --json` on a 10,000-host fleet, never load it.


@functools.cache
def console() -> Console:
    """The console reports print to."""
    from rich.console import Console

    # Piped to a file or a cron mail, Rich would squeeze the fleet table into 80 columns.
    probe = Console()
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(width=160)


@functools.cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


# The options many commands take, as the types their parameters are declared with.
INVENTORY_HELP = "Ansible inventory (file or directory)."
LIMIT_HELP = "Ansible host pattern to run on."
Inventory = Annotated[
    Path, typer.Option("--inventory", "-i", help=INVENTORY_HELP, show_default=False)
]
Limit = Annotated[str | None, typer.Option("--limit", "-l", help=LIMIT_HELP)]


def cli_config() -> config.CliConfig:
    return config.load(config.OPTIONS.get("api_url"))


@contextmanager
def api():
    cfg = cli_config()
    ca = config.ca_file()
    client = ApiClient(cfg.api_url, cfg.admin_token, ca_file=str(ca) if ca else None)
    try:
        yield client
    finally:
        client.close()


def secret_env() -> dict[str, str]:
    """What the playbooks need from the controller, passed through the run's environment only."""
    cfg = cli_config()
    env = {"SAVEOS_API_URL": cfg.api_url}
    ca = config.ca_file()
    if ca:  # the role copies it to every host and verifies the API against it
        env["SAVEOS_CA_FILE"] = str(ca)
    # Playbooks that need the token fail with their own clear message when there is none.
    with suppress(SaveOSError):
        env["SAVEOS_ADMIN_TOKEN"] = cfg.admin_token
    return env


def run_fleet_playbook(
    playbook: str,
    inventory: Path,
    *,
    title: str,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    forks: int | None = None,
    extravars: dict | None = None,
    also: Callable[[Mapping], None] | None = None,
) -> tuple[int, progress.RunState]:
    """Run a playbook with live progress and a recap; return (exit code, final state)."""
    from saveos_cli import progress, runner

    runner.check_inventory(inventory)
    env = secret_env()
    with progress.display_for(console(), title) as display:

        def on_event(event: Mapping) -> None:
            display(event)
            if also:
                also(event)

        result = runner.run_playbook(
            playbook,
            inventory,
            on_event=on_event,
            limit=limit,
            check=check,
            diff=diff,
            forks=forks,
            extravars=extravars,
            secret_env=env,
        )
    state = display.state
    progress.print_recap(console(), state)
    if result.canceled:
        unfinished = sorted(
            name
            for name, host in state.hosts.items()
            if host.outcome == "ok" and not (state.stats or {}).get("processed", {}).get(name)
        )
        where = f" during task {state.task!r}" if state.task else ""
        raise SaveOSError(
            f"interrupted{where}; unfinished: {', '.join(unfinished) or 'no host had started'}.",
            exit_code=130,
            hint="Run the same command again: every SaveOS playbook is safe to re-run.",
        )
    if not result.stats:
        last = next((line for line in reversed(result.stdout_tail) if line.strip()), "")
        raise SaveOSError(f"ansible-playbook failed before any host ran (rc {result.rc}): {last}")
    if not result.stats.get("processed"):
        target = f" matches --limit {limit!r}" if limit else " was targeted"
        raise SaveOSError(f"no host in {inventory}{target}.")
    bad = progress.failed_hosts(result.stats)
    if bad:
        err_console().print(
            f"[bold red]{len(bad)} host(s) failed or unreachable:[/] {', '.join(bad)}"
        )
        return EXIT_FLEET, state
    if result.status != "successful":
        raise SaveOSError(f"ansible-playbook ended {result.status} (rc {result.rc}).")
    return EXIT_OK, state


def parse_when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise SaveOSError(f"--at {value!r} is not an ISO 8601 timestamp.") from exc


def iso(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


def age_seconds(value: str | None, now: datetime) -> float | None:
    when = iso(value)
    return None if when is None else round((now - when).total_seconds(), 1)


def human_age(seconds: float | None) -> str:
    """'12 min ago', as the dashboard says it (saveos_rules.ago_text)."""
    return ago_text(seconds)


def human_size(value: int | None) -> str:
    from rich.filesize import decimal

    return "-" if value is None else decimal(value)
