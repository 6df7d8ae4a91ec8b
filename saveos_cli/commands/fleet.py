"""Commands that act on hosts through the playbooks: deploy, backup, restore, check, drill."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from saveos_rules import SUCCESSFUL_BACKUP

from saveos_cli.commands._common import (
    Inventory,
    Limit,
    api,
    console,
    run_fleet_playbook,
)
from saveos_cli.errors import EXIT_OK, SaveOSError


def deploy(
    inventory: Inventory,
    limit: Limit = None,
    check: Annotated[
        bool, typer.Option("--check", help="Dry run: report what would change.")
    ] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show file differences.")] = False,
    forks: Annotated[
        int | None, typer.Option("--forks", min=1, help="Hosts handled in parallel.")
    ] = None,
) -> None:
    """Install or update the SaveOS agent on the hosts (playbooks/deploy.yml).

    Exit codes: 0 all hosts ok, 1 usage or internal error, 2 some hosts failed or unreachable.
    """
    code, _ = run_fleet_playbook(
        "deploy.yml",
        inventory,
        title="deploy",
        limit=limit,
        check=check,
        diff=diff,
        forks=forks,
    )
    raise typer.Exit(code)


def backup(
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", "-i", help="Ansible inventory (not needed with --via-api)."),
    ] = None,
    limit: Limit = None,
    via_api: Annotated[
        bool,
        typer.Option(
            "--via-api",
            help="Queue backup jobs in the API instead; agents run them on their next heartbeat"
            " (for hosts the controller cannot reach). --limit takes comma-separated agent names.",
        ),
    ] = False,
) -> None:
    """Back up now across the fleet (playbooks/backup.yml), or queue jobs with --via-api.

    Exit codes: 0 all hosts ok (or all jobs queued), 1 usage or internal error, 2 some hosts
    failed or unreachable.
    """
    if via_api:
        _queue_jobs("backup", limit)
        raise typer.Exit(EXIT_OK)
    if inventory is None:
        raise SaveOSError("backup needs --inventory PATH (or --via-api to queue jobs).")
    results: dict[str, dict] = {}
    code, _ = run_fleet_playbook(
        "backup.yml",
        inventory,
        title="backup",
        limit=limit,
        also=lambda e: _collect_fact(e, "saveos_backup_result", results),
    )
    _print_backup_results(results)
    raise typer.Exit(code)


def _collect_fact(event: Mapping, fact: str, into: dict[str, dict]) -> None:
    """backup.yml keeps each host's `saveos-agent backup --json` output as a fact."""
    data = event.get("event_data") or {}
    if event.get("event") == "runner_on_ok":
        value = ((data.get("res") or {}).get("ansible_facts") or {}).get(fact)
        if isinstance(value, Mapping):
            into[data.get("host", "?")] = dict(value)


def _print_backup_results(results: dict[str, dict]) -> None:
    if not results:
        return
    from rich.filesize import decimal
    from rich.table import Table
    from rich.text import Text

    table = Table(title="backups", title_justify="left")
    for col in ("host", "status", "archive", "files", "original", "dedup", "reported"):
        table.add_column(col, justify="right" if col in ("files", "original", "dedup") else "left")
    for host in sorted(results):
        r = results[host]
        stats = r.get("stats") or {}
        status = str(r.get("status", "?"))
        table.add_row(
            host,
            Text(status, style={"ok": "green", "warning": "yellow"}.get(status, "red")),
            r.get("archive") or "-",
            str(stats.get("nfiles", "-")),
            decimal(stats["original_size"]) if "original_size" in stats else "-",
            decimal(stats["deduplicated_size"]) if "deduplicated_size" in stats else "-",
            "yes" if r.get("reported") else "spooled",
        )
    console().print(table)


def _queue_jobs(kind: str, limit: str | None) -> None:
    with api() as client:
        if limit:
            names = [n.strip() for n in limit.split(",") if n.strip()]
            for name in names:
                client.agent_by_name(name)  # unknown host: one clear sentence
        else:
            names = [a["name"] for a in client.agents() if not a.get("decommissioned_at")]
        if not names:
            raise SaveOSError("no agents are registered, so no jobs were queued.")
        jobs = client.create_jobs(kind, names)
        by_id = {a["id"]: a["name"] for a in client.agents()}
    from rich.table import Table

    table = Table(title=f"queued {kind} jobs", title_justify="left")
    for col in ("job", "host", "state"):
        table.add_column(col)
    for job in jobs:
        table.add_row(
            str(job["id"]),
            by_id.get(job["agent_id"], str(job["agent_id"])),
            job["state"],
        )
    console().print(table)
    console().print(f"{len(jobs)} job(s) queued; agents pick them up on their next heartbeat.")


def restore(
    host: Annotated[
        str, typer.Argument(help="Inventory name of the host whose repository to use.")
    ],
    inventory: Inventory,
    archive: Annotated[
        str, typer.Option("--archive", help="Archive name, or 'latest'.")
    ] = "latest",
    paths: Annotated[
        list[str] | None,
        typer.Option("--path", help="Path inside the archive to restore (repeatable)."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Directory on the host to restore into."),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="Load this database's dump (NAME or TYPE/NAME), or all: every dump of the "
            "archive.",
        ),
    ] = None,
    into: Annotated[
        str | None,
        typer.Option(
            "--into",
            help="With --database: load into this database (default: its own name).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --database: drop and replace a non-empty target database.",
        ),
    ] = False,
) -> None:
    """Restore paths from a host's archive into a target directory on that host, or load one
    database's dump (--database) into its server.

    Exit codes: 0 restored, 1 usage or internal error (unknown host, no archive), 2 the restore
    failed on the host (e.g. the target database exists and is not empty) or it was unreachable.
    """
    if database:
        if paths or target:
            raise SaveOSError("--database loads a database: give no --path or --target.")
        _restore_database(host, inventory, archive, database, into, force)
    if into or force:
        raise SaveOSError("--into and --force go with --database.")
    if not paths or not target:
        raise SaveOSError("give --path P (repeatable) and --target DIR, or --database NAME.")
    from saveos_agent.job_params import (
        JobParamError,
        archive_name,
        path_list,
        target_dir,
    )

    # The agent's own rules (it checks again on the host): no name or path read as an option.
    try:
        target = target_dir(target, "--target")
        relative = path_list(paths, "--path")
        archive_name(archive, "--archive")
    except JobParamError as exc:
        raise SaveOSError(f"{exc}.") from None
    if archive == "latest":
        archive = _latest_archive(host)
    # The names playbooks/restore.yml documents (docs/GLOSSARY.md: never the old unprefixed ones).
    extravars = {"saveos_archive": archive, "saveos_paths": relative, "saveos_target": target}
    code, _ = run_fleet_playbook(
        "restore.yml",
        inventory,
        title=f"restore {archive} on {host}",
        limit=host,
        extravars=extravars,
    )
    if code == EXIT_OK:
        console().print(f"restored {len(paths)} path(s) from {archive} into {host}:{target}")
    raise typer.Exit(code)


def _restore_database(
    host: str,
    inventory: Path,
    archive: str,
    database: str,
    into: str | None,
    force: bool,
) -> None:
    from saveos_agent.databases import ALL, check_wanted
    from saveos_agent.errors import AgentError
    from saveos_agent.job_params import archive_name

    # The agent's own rules (it checks again on the host).
    try:
        check_wanted(database)
        archive_name(archive, "--archive")
    except AgentError as exc:  # JobParamError is one
        raise SaveOSError(f"{exc}.") from None
    every = database == ALL
    if every and into:
        raise SaveOSError(
            "--into names one database: --database all loads each dump into its own name "
            "(restore one with --database TYPE/NAME --into OTHER)."
        )
    if archive == "latest":
        archive = _latest_with_all(host) if every else _latest_with_database(host, database)
    extravars: dict = {
        "saveos_archive": archive,
        "saveos_database": database,
        "saveos_force": force,
    }
    if into:
        extravars["saveos_into"] = into
    code, _ = run_fleet_playbook(
        "restore.yml",
        inventory,
        title=f"restore {database} from {archive} on {host}",
        limit=host,
        extravars=extravars,
    )
    if code == EXIT_OK and every:
        console().print(f"restored every database dump of {archive} on {host}")
    elif code == EXIT_OK:
        console().print(f"restored {database} from {archive} into {host}:{into or database}")
    raise typer.Exit(code)


def _latest_with_all(host: str) -> str:
    """The newest snapshot the API says holds database dumps, every one of them whole."""
    with api() as client:
        agent = client.agent_by_name(host)
        snaps = client.snapshots(agent["id"], limit=200)["snapshots"]
    for snap in snaps:  # newest first
        dumps = snap.get("databases") or []
        if snap.get("archive") and dumps and all(d.get("status") == "ok" for d in dumps):
            return snap["archive"]
    raise SaveOSError(f"no snapshot of {host!r} holds a whole dump of every database it has.")


def _latest_with_database(host: str, database: str) -> str:
    """The newest snapshot the API says holds a whole dump of `database` (NAME or TYPE/NAME)."""
    kind, _, name = database.rpartition("/")
    with api() as client:
        agent = client.agent_by_name(host)
        snaps = client.snapshots(agent["id"], limit=200)["snapshots"]
    for snap in snaps:  # newest first
        for dump in snap.get("databases") or []:
            if (
                snap.get("archive")
                and dump.get("name") == name
                and (not kind or dump.get("type") == kind)
                and dump.get("status") == "ok"
            ):
                return snap["archive"]
    raise SaveOSError(f"no snapshot of {host!r} holds a whole dump of database {database!r}.")


def _latest_archive(host: str) -> str:
    with api() as client:
        agent = client.agent_by_name(host)
        snaps = client.snapshots(agent["id"], limit=50)["snapshots"]
    for snap in snaps:  # newest first
        if snap.get("archive") and snap.get("exit_status") in SUCCESSFUL_BACKUP:
            return snap["archive"]
    raise SaveOSError(f"host {host!r} has no successful backup to restore from.")


def check(
    inventory: Inventory,
    limit: Limit = None,
    verify_data: Annotated[
        bool, typer.Option("--verify-data", help="Also read every chunk.")
    ] = False,
) -> None:
    """Check the repositories' consistency on the hosts (playbooks/check.yml).

    Exit codes: 0 all hosts ok, 1 usage or internal error, 2 some hosts failed or unreachable.
    """
    extravars = {"saveos_verify_data": True} if verify_data else None
    code, _ = run_fleet_playbook(
        "check.yml", inventory, title="check", limit=limit, extravars=extravars
    )
    raise typer.Exit(code)


def drill(
    inventory: Inventory,
    limit: Limit = None,
) -> None:
    """Restore drill: restore a sample of files on each host and compare (playbooks/drill.yml).

    Exit codes: 0 all hosts ok, 1 usage or internal error, 2 some hosts failed or unreachable.
    """
    code, _ = run_fleet_playbook("drill.yml", inventory, title="drill", limit=limit)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    for command in (deploy, backup, restore, check, drill):
        app.command()(command)
