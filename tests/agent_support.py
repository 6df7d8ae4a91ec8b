"""Helpers for the agent tests: the built zipapp, a throwaway host setup, tree hashes."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


_built: dict[str, Path] = {}


def build_pyz(tmp_path_factory) -> Path:
    """The real artifact, built once per session by agent/build.py, as hosts receive it."""
    if "pyz" in _built:
        return _built["pyz"]
    out = tmp_path_factory.mktemp("dist") / "saveos-agent.pyz"
    subprocess.run(
        [SYSTEM_PYTHON, str(REPO_ROOT / "agent" / "build.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    _built["pyz"] = out
    return out


def tree_sha256(root: Path) -> dict[str, str]:
    """relative path -> sha256 of content (symlinks: their target), for every file under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            out[rel] = "dir"
    return out


def write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


class AgentHost:
    """One simulated host: sources, 0600 passphrase + config, a repo path, the agent CLI."""

    def __init__(self, root: Path, pyz: Path, **config):
        self.root = root
        self.pyz = pyz
        self.src = root / "src"
        self.repo = root / "repo"
        self.passphrase = "pp-" + secrets.token_urlsafe(24)
        self.passphrase_file = write_private(root / "etc" / "passphrase", self.passphrase + "\n")
        self.config_path = root / "etc" / "agent.json"
        self.log_file = root / "log" / "agent.log"
        self.src.mkdir(parents=True, exist_ok=True)
        self.config = {
            "repository": str(self.repo),
            "passphrase_file": str(self.passphrase_file),
            "sources": [str(self.src)],
            "excludes": ["*.tmp"],
            "retention": {"keep_daily": 7, "keep_within": "1d"},
            "lock_wait_s": 5,
            "spool_dir": str(root / "spool"),
            "state_dir": str(root / "state"),
            "log_file": str(self.log_file),
            "compression": "lz4",
            "hostname": "testhost",
        }
        self.config.update(config)
        self.write_config()

    def write_config(self, **overrides) -> None:
        self.config.update(overrides)
        write_private(self.config_path, json.dumps(self.config))

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        env["BORG_BASE_DIR"] = str(self.root / "borgbase")
        return env

    def argv(self, *args: str) -> list[str]:
        return [SYSTEM_PYTHON, str(self.pyz), "--config", str(self.config_path), *args]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def json(self, *args: str, timeout: float = 180) -> tuple[int, dict]:
        proc = self.run(*args, "--json", timeout=timeout)
        assert proc.stdout.strip(), f"no JSON output (rc {proc.returncode}): {proc.stderr}"
        return proc.returncode, json.loads(proc.stdout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def init(self) -> None:
        proc = self.run("init", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["created"] is True

    def borg(self, *args: str) -> subprocess.CompletedProcess:
        """borg run by the test itself (verification only) with the passphrase in its env."""
        env = self.env | {"BORG_PASSPHRASE": self.passphrase}
        return subprocess.run(["borg", *args], env=env, capture_output=True, text=True)

    def archives(self) -> list[str]:
        proc = self.borg("list", "--json", str(self.repo))
        assert proc.returncode == 0, proc.stderr
        return [a["name"] for a in json.loads(proc.stdout)["archives"]]


def make_tree(root: Path) -> None:
    """A small but varied source tree: nested dirs, binary, empty, unicode, symlink, excluded."""
    (root / "etc" / "app").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "app" / "app.conf").write_text("key = value\n")
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "blob.bin").write_bytes(os.urandom(300_000))
    (root / "data" / "empty").write_bytes(b"")
    (root / "data" / "grüße.txt").write_text("unicode name\n", encoding="utf-8")
    (root / "data" / "scratch.tmp").write_text("excluded\n")
    link = root / "data" / "link"
    if not link.is_symlink():
        link.symlink_to("blob.bin")
    for i in range(20):
        (root / "data" / f"small-{i:02d}.txt").write_text(f"line {i}\n" * (i + 1))
