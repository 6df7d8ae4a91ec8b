"""The saveos CLI as the tests run it: `python -m saveos_cli.app` in a child process, from the
repository's root, stdin closed unless given, output captured as text. Tests that need more of
the process (a PTY, a signal, a wrapper command, a server left running) start it themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from conftest import REPO_ROOT


def saveos(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | str = REPO_ROOT,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """`saveos ARGS` with exactly `env` (None: this process's environment); never raises on a
    non-zero exit, which is often what a test looks at."""
    return subprocess.run(
        [sys.executable, "-m", "saveos_cli.app", *args],
        cwd=cwd, env=None if env is None else dict(env), timeout=timeout,
        input=stdin, stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def environ_without(prefixes: tuple[str, ...] = ("SAVEOS_",), **extra: str) -> dict[str, str]:
    """This process's environment without the caller's variables that start with `prefixes`
    (a developer's SAVEOS_API_URL must not reach the CLI under test), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | extra
