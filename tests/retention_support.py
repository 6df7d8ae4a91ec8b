"""A repository server on this machine for the retention tests: real `borg serve`, reached the way
the repository server's authorized_keys lines reach it, without sshd.

BORG_RSH names a script that ignores borg's ssh arguments and runs the forced command an
authorized_keys line would: `borg serve --append-only --restrict-to-repository <repo>` for the
host, `borg serve --restrict-to-path <root>` for the controller's full-access key.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent_support import write_private

from saveos_cli.retention import borg, maintain
from saveos_cli.retention.servers import LocalFiles

PASSPHRASE = "correct horse battery staple, retention"


def _forced(path: Path, serve_args: str) -> Path:
    path.write_text(f"#!/bin/sh\nexec borg serve {serve_args}\n")
    path.chmod(0o700)
    return path


class RepoServer:
    def __init__(self, root: Path):
        self.root = root / "repos"
        self.root.mkdir(parents=True)
        self.work = self.root / ".saveos"
        self.work.mkdir()
        self.bin = root / "bin"
        self.bin.mkdir()
        self.controller = root / "controller"
        self.admin_rsh = _forced(self.bin / "admin-rsh", f"--restrict-to-path {self.root}")
        self.passphrase = write_private(root / "escrow" / "passphrase", PASSPHRASE + "\n")

    def url(self, path: str | Path) -> str:
        return f"ssh://repo1{path}"

    def add_host(self, name: str) -> HostClient:
        repo = self.root / name
        rsh = _forced(self.bin / f"{name}-rsh", f"--append-only --restrict-to-repository {repo}")
        client = HostClient(name, self.url(repo), repo, rsh, self.controller.parent / name)
        client.borg("init", "--encryption", "repokey-blake2", client.url)
        client.key_export = self.passphrase.parent / f"{name}.key.export"
        client.borg("key", "export", client.url, str(client.key_export))
        return client

    def repository(self, host: HostClient, retention: dict | None = None) -> maintain.Repository:
        access = borg.BorgAccess(
            host=host.name,
            url=host.url,
            rsh=str(self.admin_rsh),
            passphrase_file=self.passphrase,
            base_dir=self.controller / "borg" / host.name,
            key_export=host.key_export,
        )
        return maintain.Repository(
            access=access,
            path=str(host.repo),
            files=LocalFiles("repo1"),
            work_root=str(self.work),
            url_of=self.url,
            retention=retention or {"keep_last": 3},
        )


class HostClient:
    """A backed-up host: its own borg cache, the append-only forced command, the passphrase."""

    def __init__(self, name: str, url: str, repo: Path, rsh: Path, home: Path):
        self.name, self.url, self.repo, self.rsh = name, url, repo, rsh
        self.home = home
        self.src = home / "src"
        self.src.mkdir(parents=True)
        self.made: dict[str, datetime] = {}
        self.key_export: Path | None = None
        self._last_stamp: datetime | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        env.update(
            BORG_RSH=str(self.rsh),
            BORG_PASSPHRASE=PASSPHRASE,
            BORG_BASE_DIR=str(self.home / "borg"),
            BORG_RELOCATED_REPO_ACCESS_IS_OK="no",
        )
        return env

    def borg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["borg", *args], env=self.env(), capture_output=True, text=True, timeout=300
        )
        if check and proc.returncode not in (0, 1):
            raise AssertionError(f"borg {args[0]} rc={proc.returncode}: {proc.stderr[-2000:]}")
        return proc

    def backup(self, name: str, when: str | None = None, content: str | None = None) -> None:
        (self.src / "file.txt").write_text(content or f"{self.name} {name}\n" * 200)
        (self.src / f"{name}.bin").write_bytes(hashlib.sha256(name.encode()).digest() * 4096)
        # Borg's --keep-last is --keep-secondly: two archives made in one second count as one,
        # so archives made back to back get timestamps a second apart.
        self.borg(
            "create",
            "--timestamp",
            when or self._next_stamp(),
            f"{self.url}::{name}",
            str(self.src),
        )
        self.made[name] = datetime.now(UTC)

    def _next_stamp(self) -> str:
        now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(seconds=1)
        self._last_stamp = now
        return now.isoformat()

    def archives(self) -> list[str]:
        out = self.borg("list", "--json", self.url)
        return [a["name"] for a in json.loads(out.stdout)["archives"]]

    def sha256_of(self, archive: str) -> dict[str, str]:
        out = self.borg("list", "--json-lines", "--format", "{sha256}", f"{self.url}::{archive}")
        return {
            item["path"]: item["sha256"]
            for item in map(json.loads, out.stdout.splitlines())
            if item["type"] == "-"
        }
