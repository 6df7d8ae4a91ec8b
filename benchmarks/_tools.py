"""The backup tools P2 and P7 set side by side on this machine: each with a repository and a Borg
cache of its own and no passphrase from the caller's environment; the SaveOS agent and borgmatic
as both benchmarks drive them; one backup timed, and the order the tools take turns in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import agent_argv, children_cpu, write_agent_config, write_borgmatic_config

BORGMATIC_VERSION = "2.1.10"


def run(argv, env, **kw) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, **kw)
    if proc.returncode not in (0, 1):  # 1: borg warning (e.g. a file changed while read)
        raise RuntimeError(
            f"{argv[0]} {argv[1:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )


class Tool:
    """A tool under comparison; `backup()` is its own. `env` is what the tool runs with,
    `borg_env` adds the passphrase for the benchmark's own borg calls."""

    name = ""

    def __init__(self, work: Path, passfile: Path):
        self.work, self.passfile = work, passfile
        self.repo = work / "repo"
        self.env = dict(os.environ, BORG_BASE_DIR=str(work / "borg-base"), BORG_EXIT_CODES="legacy")
        for key in ("BORG_PASSPHRASE", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD", "PGPASSWORD"):
            self.env.pop(key, None)
        self.borg_env = dict(self.env, BORG_PASSCOMMAND=f"cat {passfile}")

    def reset(self) -> None:
        """A fresh work directory and an empty repokey-blake2 repository."""
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        run(["borg", "init", "--encryption", "repokey-blake2", str(self.repo)], self.borg_env)

    def backup(self) -> None:
        raise NotImplementedError

    def last_archive(self) -> dict:
        """nfiles and original size of the newest archive: every tool must have saved the same."""
        out = subprocess.run(
            ["borg", "info", "--json", "--last", "1", str(self.repo)],
            env=self.borg_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        stats = json.loads(out)["archives"][0]["stats"]
        return {"nfiles": stats["nfiles"], "original_size": stats["original_size"]}


class Agent(Tool):
    """`saveos-agent backup` from the zipapp: agent.json names the tool's repository and
    passphrase file, and `settings` (sources, retention, ...)."""

    name = "saveos_agent"

    def __init__(self, work: Path, passfile: Path, pyz: Path, settings: dict):
        super().__init__(work, passfile)
        self.pyz, self.settings = pyz, settings

    def reset(self) -> None:
        super().reset()
        own = {"repository": str(self.repo), "passphrase_file": str(self.passfile)}
        self.config = write_agent_config(self.work, {**own, **self.settings})

    def backup(self) -> None:
        run(agent_argv(self.pyz, self.config, "backup"), self.env)


class Borgmatic(Tool):
    """`borgmatic create prune compact` backing `source` up; `extra` lines in its config."""

    name = "borgmatic"

    def __init__(
        self, work: Path, passfile: Path, borgmatic: str, *, source: Path, compression: str,
        extra: list[str],
    ):  # fmt: skip
        super().__init__(work, passfile)
        self.borgmatic, self.source, self.compression, self.extra = (
            borgmatic, source, compression, extra,
        )  # fmt: skip

    def reset(self) -> None:
        super().reset()
        self.config = write_borgmatic_config(
            self.work, source=self.source, repo=self.repo, passfile=self.passfile,
            compression=self.compression, extra=self.extra,
        )  # fmt: skip

    def backup(self) -> None:
        run([self.borgmatic, "--config", str(self.config), "create", "prune", "compact"], self.env)


def ensure_borgmatic(path: str) -> str:
    """borgmatic from PyPI in a venv of its own (`<venv>/bin/borgmatic`), created when missing."""
    if os.path.exists(path):
        return path
    venv = Path(path).parent.parent
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"borgmatic=={BORGMATIC_VERSION}"], check=True)
    return path


def timed(tool) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user+system of every process the backup ran)."""
    cpu0 = children_cpu()
    start = time.perf_counter()
    tool.backup()
    wall = time.perf_counter() - start
    return wall, children_cpu() - cpu0


def rotated(tools: list, k: int) -> list:
    """The tools in turn `k`'s order: nobody always runs first."""
    return tools[k % len(tools) :] + tools[: k % len(tools)]
