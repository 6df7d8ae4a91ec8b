"""`saveos prune` and `saveos repo rollback` across an inventory, from the controller.

Per host on a repository server: its repository through the controller's own full-access key
(the service user's `saveos-admin:controller` line: `borg serve --restrict-to-path <root>`), the
passphrase and key from the escrow (by fd, never argv), the repository's files read over the
controller's root login (repo_files), the last good state and the archives on record from the
API. A host whose repository is on its own disk prunes itself (the agent does): skipped here.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from saveos_cli import config, recovery, repo_servers
from saveos_cli.api_client import ApiClient
from saveos_cli.errors import EXIT_ERROR, EXIT_FLEET, SaveOSError
from saveos_cli.inventory_hosts import Host, backed_up, load_hosts
from saveos_cli.retention import borg, maintain, offsite, verify
from saveos_cli.retention.servers import SshFiles

# Where on each server the probes and kept (pre-rollback) copies go: beside the repositories,
# so the admin key's --restrict-to-path reaches them; a dot name is never a host's.
WORK_DIR = ".saveos-retention"
VERIFY_DATA_EVERY_S = 30 * 86400  # saveos_prune_verify_data_interval_s
# The role's default retention (roles/saveos_agent/defaults/main.yml), for hosts that set none.
DEFAULT_RETENTION = {"keep_within": "1d", "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6}
_UNIT_DAYS = {"H": 1 / 24, "d": 1, "w": 7, "m": 31, "y": 366}
_COUNT_DAYS = {"keep_hourly": 1 / 24, "keep_daily": 1, "keep_weekly": 7, "keep_monthly": 31}


def admin_key() -> Path:
    """The controller's full-access key for the repository servers (made by the deploy)."""
    return config.data_dir() / "repo-admin" / "id_ed25519"


def retention_days(retention: dict[str, Any]) -> float:
    """How far back the policy keeps archives, in days (keep_last: no time bound, 0)."""
    days = 0.0
    within = str(retention.get("keep_within") or "")
    if within[:-1].isdigit() and within[-1:] in _UNIT_DAYS:
        days = int(within[:-1]) * _UNIT_DAYS[within[-1]]
    for key, unit in (*_COUNT_DAYS.items(), ("keep_yearly", 366)):
        days = max(days, int(retention.get(key) or 0) * unit)
    return days


@dataclass
class Target:
    host: Host
    location: repo_servers.ServerRepository
    retention: dict[str, Any]
    verify_data_every_s: int


def targets(inventory: Path, limit: str | None) -> tuple[list[Target], list[dict[str, Any]]]:
    """The hosts to maintain, and those skipped (with why)."""
    everyone = {h.name: h for h in load_hosts(inventory)}
    chosen = backed_up(load_hosts(inventory, limit))
    out, skipped = [], []
    for host in chosen:
        location = repo_servers.location(host, everyone)
        if location is None:
            skipped.append(
                {"host": host.name, "result": "skipped", "message": "local repository: the host "
                 "prunes its own (no protection against the host)"}
            )  # fmt: skip
            continue
        retention = dict(host.vars.get("saveos_agent_retention") or DEFAULT_RETENTION)
        every = int(host.vars.get("saveos_prune_verify_data_interval_s") or VERIFY_DATA_EVERY_S)
        out.append(Target(host, location, retention, every))
    return out, skipped


def _lock_problem(target: Target) -> str | None:
    if offsite.enabled(target.location):
        var = "saveos_repo_server_offsite_object_lock_days"
        days = offsite.lock_days(target.location)
    else:
        var = "saveos_agent_offsite_object_lock_days"
        days = int(target.host.vars.get(var) or 0)
    need = retention_days(target.retention)
    if days and days < need:
        return (
            f"{target.host.name}: the offsite Object Lock period ({days} days) is shorter than "
            f"the retention ({need:g} days): the copy could lose archives the policy keeps; "
            f"raise {var} or shorten saveos_agent_retention."
        )
    return None


def _rsh(location: repo_servers.ServerRepository) -> str:
    """ssh to the service user with the controller's full-access key; the server's host key
    is checked as the inventory's own connection checks it."""
    key = admin_key()
    if not key.is_file():
        raise SaveOSError(
            f"no full-access key at {key}: deploy the repository servers first "
            "(saveos deploy makes the key and registers it on them)."
        )
    server = location.server
    argv = ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
    argv += ["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=30", *server.ssh_args]
    return shlex.join(argv)


def repository(target: Target, scratch: Path) -> maintain.Repository:
    passphrase, key_export = recovery.escrow_files(target.host.name)
    location = target.location
    root = location.path.rsplit("/", 1)[0]
    access = borg.BorgAccess(
        host=target.host.name,
        url=location.url,
        rsh=_rsh(location),
        passphrase_file=passphrase,
        base_dir=config.data_dir() / "retention" / "borg" / target.host.name,
        key_export=key_export,
    )
    prefix = f"ssh://{location.user}@{location.address}:{location.port}"
    return maintain.Repository(
        access=access,
        path=location.path,
        files=SshFiles(location.server),
        work_root=f"{root}/{WORK_DIR}",
        url_of=lambda path: prefix + path,
        retention=target.retention,
    )


def _on_record(state: dict[str, Any]) -> dict[str, datetime]:
    return {
        name: maintain.parse_time(when)
        for name, when in (state.get("archives_on_record") or {}).items()
    }


def _due(state: dict[str, Any], every_s: int, now: datetime) -> bool:
    last = maintain.parse_time(state.get("last_verify_data_at"))
    return last is None or now - last >= timedelta(seconds=every_s)


def _report(client: ApiClient | None, agent_id: int | None, result: dict[str, Any]) -> None:
    if client is None or agent_id is None:
        return
    body = {
        k: result[k]
        for k in ("kind", "result", "started_at", "finished_at", "verify_data", "pruned")
    }
    body["message"] = str(result.get("message") or "")[:60000]
    body["findings"] = result.get("findings") or []
    for key in ("transaction", "archives", "state"):
        if result.get(key) is not None:
            body[key] = result[key]
    client.record_maintenance(agent_id, body)
    result["reported"] = True


def _failed(host: str, started: datetime, message: str) -> dict[str, Any]:
    now = maintain.iso(maintain.utcnow())
    return {
        "host": host, "kind": "prune", "result": "error", "started_at": maintain.iso(started),
        "finished_at": now, "duration_s": 0.0, "findings": [], "pruned": [], "archives": None,
        "transaction": None, "verify_data": False, "message": message, "state": None,
    }  # fmt: skip


def prune(
    inventory: Path,
    limit: str | None,
    client: ApiClient,
    verify_data: bool | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, Any]]:
    """Maintain every targeted repository; one result per host (errors are results too)."""
    chosen, results = targets(inventory, limit)
    for target in chosen:
        name = target.host.name
        started = maintain.utcnow()
        agent_id = None
        try:
            problem = _lock_problem(target)
            if problem:
                raise SaveOSError(problem, exit_code=EXIT_FLEET)
            agent_id = client.agent_by_name(name)["id"]
            state = client.maintenance_state(agent_id, repository=target.location.url)
            prev = verify.RepoState.from_json(state.get("state"))
            due = _due(state, target.verify_data_every_s, started)
            with tempfile.TemporaryDirectory(prefix="saveos-prune-") as tmp:
                repo = repository(target, Path(tmp))
                log(f"{name}: verifying {repo.access.url} ...")
                result = maintain.maintain(
                    repo, prev, _on_record(state), due if verify_data is None else verify_data
                )
                if offsite.enabled(target.location):
                    result["offsite"] = _offsite(repo, target, result, log)
        except SaveOSError as exc:
            message = exc.message if exc.message.startswith(name) else f"{name}: {exc.message}"
            result = _failed(name, started, message)
            if offsite.enabled(target.location):
                result["offsite"] = offsite.not_copied("the central run failed")
        try:
            _report(client, agent_id, result)
            copied = (result.get("offsite") or {}).pop("report", None)
            if copied is not None and agent_id is not None:
                client.record_server_offsite(agent_id, copied)
        except SaveOSError as exc:
            result["report_error"] = exc.message
        log(f"{name}: {result['result']}: {result['message']}")
        if result.get("offsite"):
            log(f"{name}: offsite {result['offsite']['result']}: {result['offsite']['message']}")
        results.append(result)
    return results


def _offsite(
    repo: maintain.Repository, target: Target, result: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    """The server's offsite copy, only of a repository this run left verified and good."""
    if result["result"] != "ok" or result.get("transaction") is None:
        why = "tampering found" if result["result"] == "tampered" else "the central run failed"
        return offsite.not_copied(f"{why}; the offsite copy keeps its last good state")
    log(f"{target.host.name}: offsite copy by {target.location.server.name} ...")
    try:
        return offsite.copy(repo, target.location, int(result["transaction"]))
    except SaveOSError as exc:
        return {"result": "error", "message": f"offsite copy not made: {exc.message}"}


def has_write_access(location: repo_servers.ServerRepository) -> list[str]:
    """The key lines on the server that can still write to the host's repository."""
    keys = location.helper("show").get("keys") or []
    host = location.host
    return [k for k in keys if k == f"client+{host}" or k.startswith(f"grant+{host}+")]


def rollback(
    inventory: Path,
    name: str,
    client: ApiClient,
    force: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    chosen, skipped = targets(inventory, name)
    target = next((t for t in chosen if t.host.name == name), None)
    if target is None:
        why = next((s["message"] for s in skipped if s["host"] == name), "not in the inventory")
        raise SaveOSError(f"{name}: nothing to roll back ({why}).", exit_code=EXIT_ERROR)
    writers = has_write_access(target.location)
    if writers and not force:
        raise SaveOSError(
            f"{name} can still write to its repository ({', '.join(writers)} on "
            f"{target.location.server.name}): a rollback now could be undone by the attacker. "
            f"Revoke it first (saveos repo revoke {name}), or pass --force.",
            exit_code=EXIT_FLEET,
        )
    agent_id = client.agent_by_name(name)["id"]
    state = client.maintenance_state(agent_id, repository=target.location.url)
    prev = verify.RepoState.from_json(state.get("state"))
    with tempfile.TemporaryDirectory(prefix="saveos-rollback-") as tmp:
        repo = repository(target, Path(tmp))
        result = maintain.rollback(repo, prev, _on_record(state), Path(tmp), log=log)
    _report(client, agent_id, result)
    return result


def revoke(inventory: Path, name: str) -> dict[str, Any]:
    """Take the host's write access away (its next deploy gives it back)."""
    chosen, _ = targets(inventory, name)
    target = next((t for t in chosen if t.host.name == name), None)
    if target is None:
        raise SaveOSError(f"{name}: no repository on a repository server in the inventory.")
    return target.location.helper("deny", name)
