"""ansible, ansible-playbook and ansible-galaxy as the tests and benchmarks run them: the venv's
binaries, colour off, output captured, and stdin=DEVNULL (ssh turns a stdin it inherits
non-blocking, and the caller's next read of it fails)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # ansible is installed beside the interpreter, in the venv
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+(ok=.*)$", re.MULTILINE)


def ansible_env(
    extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (this process's environment) with the venv's bin first on PATH and no colour,
    then `extra`."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`argv` with stdin closed and its output captured as text; env defaults to ansible_env().
    Also for a `saveos` command that runs ansible."""
    return subprocess.run(
        list(argv), cwd=cwd, env=dict(ansible_env() if env is None else env),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def ansible(command: str, *args: str, **options) -> subprocess.CompletedProcess:
    """The venv's `command` (ansible, ansible-playbook, ansible-galaxy) with `args`; options as
    run()'s."""
    return run([str(BIN / command), *args], **options)


def playbook(
    inventory: Path | str, path: Path | str, *args: str, **options
) -> subprocess.CompletedProcess:
    """`ansible-playbook -i INVENTORY PATH ARGS` (PATH relative to cwd, the repository's root
    unless given); options as run()'s."""
    return ansible("ansible-playbook", "-i", str(inventory), str(path), *args, **options)


def recap(result: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counts per host (ok, changed, unreachable, failed, ...); there must be one."""
    rows = {
        host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counts)}
        for host, counts in RECAP_LINE.findall(result.stdout)
    }
    assert rows, "no PLAY RECAP in the output:\n" + result.stdout[-3000:] + result.stderr[-3000:]
    return rows


def explain(result: subprocess.CompletedProcess) -> str:
    """The exit code and the tails of both outputs, for an assertion's message."""
    return f"rc={result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
