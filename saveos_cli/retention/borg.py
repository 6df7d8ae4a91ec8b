"""Borg on the controller, with the full-access key: list, check, prune, compact, probes.

The argv builders and the runner are the agent's (`saveos_agent.borg_commands`, `.execute`):
the passphrase goes from the escrow file into borg's pipe (BORG_PASSPHRASE_FD), never into argv
or an environment value.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saveos_agent import borg_commands, execute
from saveos_agent.errors import AgentError

from saveos_cli.errors import EXIT_FLEET, SaveOSError

LOCK_WAIT_S = 600


@dataclass(frozen=True)
class BorgAccess:
    """How the controller reaches one repository with full access."""

    host: str
    url: str  # ssh://user@server:port/root/host (or a local path)
    rsh: str | None  # BORG_RSH: ssh with the controller's full-access key
    passphrase_file: Path
    base_dir: Path  # BORG_BASE_DIR: this repository's cache and security dir on the controller
    key_export: Path | None = None  # the escrowed `borg key export`

    def at(self, url: str, base_dir: Path) -> BorgAccess:
        """The same access to another location of the repository (a probe copy)."""
        return BorgAccess(self.host, url, self.rsh, self.passphrase_file, base_dir, self.key_export)


def ssh_rsh(key_file: Path, known_hosts: Path | None, port: int | None = None) -> str:
    argv = ["ssh", "-i", str(key_file), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
    argv += ["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=30"]
    if known_hosts:
        argv += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
    if port:
        argv += ["-p", str(port)]
    return shlex.join(argv)


def run(access: BorgAccess, argv: tuple[str, ...], what: str) -> execute.BorgResult:
    access.base_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
    env["BORG_BASE_DIR"] = str(access.base_dir)
    if access.rsh:
        env["BORG_RSH"] = access.rsh
    try:
        result = execute.run(
            argv, execute.Secrets(passphrase_file=str(access.passphrase_file)), env=env
        )
    except AgentError as exc:
        raise SaveOSError(f"{access.host}: {what}: {exc}", exit_code=EXIT_FLEET) from None
    return result


def fail(access: BorgAccess, what: str, result: execute.BorgResult) -> SaveOSError:
    return SaveOSError(
        f"{access.host}: {what} failed: {result.error_message}", exit_code=EXIT_FLEET
    )


def archives(access: BorgAccess) -> dict[str, dict[str, Any]]:
    """name -> {"id", "time"} of every archive in the repository."""
    result = run(access, borg_commands.list_archives(access.url, lock_wait=LOCK_WAIT_S), "list")
    if result.status == "error":
        raise fail(access, "borg list", result)
    listing = result.json() or {}
    return {
        a["name"]: {"id": a.get("id", ""), "time": a.get("time") or a.get("start")}
        for a in listing.get("archives", [])
    }


def check(access: BorgAccess, verify_data: bool) -> execute.BorgResult:
    argv = borg_commands.check(access.url, verify_data=verify_data, lock_wait=LOCK_WAIT_S)
    return run(access, argv, "check")


def prune(access: BorgAccess, retention: dict[str, Any]) -> execute.BorgResult:
    return run(access, borg_commands.prune(access.url, retention, lock_wait=LOCK_WAIT_S), "prune")


def compact(access: BorgAccess) -> execute.BorgResult:
    return run(access, borg_commands.compact(access.url, lock_wait=LOCK_WAIT_S), "compact")


def import_key(access: BorgAccess) -> None:
    """Put the escrowed key back into the repository (a client may have changed its
    passphrase: the key in the repository's config is the only copy borg reads)."""
    if access.key_export is None:
        return
    argv = ("borg", "key", "import", access.url, str(access.key_export))
    result = run(access, argv, "key import")
    if result.status == "error":
        raise fail(access, "borg key import (the escrowed key)", result)


def forget_cache(access: BorgAccess) -> None:
    """After a rollback the controller's cache and security dir are newer than the repository
    (borg refuses them as "either an attack or unsafe"): drop this repository's base dir."""
    shutil.rmtree(access.base_dir, ignore_errors=True)
