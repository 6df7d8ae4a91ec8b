"""Where repo_files runs: in this process (a repository on the controller's own disk), or on the
repository server over the controller's root SSH session (the same access that deployed it)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Protocol

from saveos_cli.errors import EXIT_FLEET, SaveOSError
from saveos_cli.retention import repo_files

SCRIPT = Path(repo_files.__file__).read_text(encoding="utf-8")


class RepoFiles(Protocol):
    name: str

    def call(self, *requests: dict[str, Any]) -> list[dict[str, Any]]: ...


class LocalFiles:
    def __init__(self, name: str = "localhost"):
        self.name = name

    def call(self, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return [repo_files.handle(r) for r in requests]
        except (repo_files.RepoFilesError, OSError, KeyError, ValueError) as exc:
            raise SaveOSError(f"{self.name}: {exc}", exit_code=EXIT_FLEET) from None


class SshFiles:
    """repo_files on a repository server: `python3 -c <module> <requests>` as root over SSH."""

    def __init__(self, host):  # saveos_cli.inventory_hosts.Host
        self.host = host
        self.name = host.name

    def call(self, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        command = f"python3 -c {shlex.quote(SCRIPT)} {shlex.quote(json.dumps(list(requests)))}"
        proc = self.host.ssh(command, timeout=3600)
        out = proc.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            answer = json.loads(out[-1])
        except (IndexError, ValueError):
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = err[-1] if err else f"ssh exited {proc.returncode}"
            raise SaveOSError(
                f"repository server {self.name} unreachable: {reason}", exit_code=EXIT_FLEET
            ) from None
        if not answer.get("ok"):
            raise SaveOSError(f"{self.name}: {answer.get('error')}", exit_code=EXIT_FLEET)
        return answer["results"]
