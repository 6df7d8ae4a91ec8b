"""The offsite copy of a repository on a repository server, made BY THAT SERVER, after the
central run verified it.

The backed-up hosts hold no S3 credentials: the server does (the saveos_repo_server role writes
its credentials file and offsite.json, root 0600). Only after `saveos prune` found a repository
untouched, checked, pruned and compacted does the controller ask the server, over its root
login, to freeze the repository exactly as verified (hard links cut at that transaction:
repo_files.snapshot, so nothing the host commits meanwhile rides along) and to run the same
uploader the hosts of local repositories use (saveos_offsite, in the server's boto3 virtualenv)
on that snapshot. A tampered repository is never copied: the offsite copy keeps its last good
state, locked by S3 Object Lock. The result is the host's offsite report in the API.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from saveos_agent.actions.offsite import report_body

from saveos_cli import recovery, repo_servers
from saveos_cli.retention import maintain

SYNC_TIMEOUT_S = 6 * 3600


def enabled(location: repo_servers.ServerRepository) -> bool:
    return bool(repo_servers.server_var(location.server, "offsite_bucket"))


def interval_s(location: repo_servers.ServerRepository) -> int:
    return int(repo_servers.server_var(location.server, "offsite_interval_s") or 0)


def lock_days(location: repo_servers.ServerRepository) -> int:
    if not enabled(location):
        return 0
    return int(repo_servers.server_var(location.server, "offsite_object_lock_days") or 0)


def settings(host: str, location: repo_servers.ServerRepository):
    """saveos_offsite Settings of the host's server-made copy, as the controller reads it
    (`saveos escrow verify --method offsite`, `saveos offsite verify`): the credentials file
    named by the server's inventory vars, on the controller."""
    recovery.offsite_package()
    from saveos_offsite.settings import Settings

    def var(key: str) -> Any:
        return repo_servers.server_var(location.server, f"offsite_{key}")

    return Settings(
        path=f"<inventory: {location.server.name}>",
        bucket=str(var("bucket")),
        repository="",
        host=host,
        prefix=str(var("prefix") if var("prefix") is not None else "saveos"),
        endpoint_url=var("endpoint_url") or None,
        region=var("region") or None,
        credentials_file=var("credentials_file") or None,
        object_lock_mode=var("object_lock_mode") or None,
        object_lock_days=int(var("object_lock_days") or 0),
    )


def _sync_command(host: str, snapshot: str) -> str:
    layout = repo_servers.role_vars()
    python = layout["saveos_repo_server_offsite_venv"] + "/bin/python"
    argv = [python, "-m", "saveos_offsite", "sync", "--config"]
    argv += [layout["saveos_repo_server_offsite_config"], "--host", host, "--repository", snapshot]
    return f"PYTHONPATH={shlex.quote(layout['saveos_repo_server_offsite_program'])} " + shlex.join(
        argv
    )


def _run(location: repo_servers.ServerRepository, command: str) -> dict[str, Any]:
    proc = location.server.ssh(command, timeout=SYNC_TIMEOUT_S)
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
        if not isinstance(result, dict):
            raise ValueError
        return result
    except (IndexError, ValueError):
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = err[-1] if err else f"ssh exited {proc.returncode}"
        return {
            "status": "error",
            "result": "error",
            "message": f"the offsite program on {location.server.name} gave no result: {reason} "
            "(is the server deployed with saveos_repo_server_offsite_bucket?)",
        }


def copy(
    repo: maintain.Repository, location: repo_servers.ServerRepository, transaction: int
) -> dict[str, Any]:
    """Copy the repository as verified at `transaction` to S3, from the server; the program's
    result plus the API report body (`report`)."""
    started = maintain.iso(maintain.utcnow())
    snapshot = f"{repo.work_root}/offsite-{repo.host}"
    try:
        repo.files.call(
            {"op": "snapshot", "repository": repo.path, "transaction": transaction,
             "dest": snapshot}
        )  # fmt: skip
        result = _run(location, _sync_command(repo.host, snapshot))
    finally:
        repo.files.call({"op": "remove", "path": snapshot, "root": repo.work_root})
    result.setdefault("result", "error")
    result["server"] = location.server.name
    result["transaction"] = transaction
    body = report_body(result, started, maintain.iso(maintain.utcnow()))
    body["message"] = f"by {location.server.name}, transaction {transaction}: {body['message']}"
    body["server"] = location.server.name
    if interval_s(location):
        body["interval_s"] = interval_s(location)
    result["report"] = body
    return result


def not_copied(why: str) -> dict[str, Any]:
    return {"result": "skipped", "message": f"not copied offsite: {why}"}
