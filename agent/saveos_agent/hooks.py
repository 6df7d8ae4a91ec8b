"""Hooks around a backup: shell commands with a timeout each (before_backup, after_backup,
on_error). A hook that fails or times out makes the backup fail with its own words; the files
and dumps are still backed up (a before_backup hook that failed is no reason to keep nothing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from saveos_agent.errors import AgentError

log = logging.getLogger("saveos_agent.hooks")

PHASES = ("before_backup", "after_backup", "on_error")
DEFAULT_TIMEOUT_S = 300
OUTPUT_KEEP = 2000


@dataclass(frozen=True)
class Hook:
    phase: str
    index: int
    command: str
    timeout_s: int = DEFAULT_TIMEOUT_S

    @property
    def label(self) -> str:
        return f"hook {self.phase}[{self.index}]"


def validate(raw: Any) -> Dict[str, List[Hook]]:
    if not isinstance(raw, dict):
        raise AgentError("config key 'hooks' must be an object")
    extra = sorted(set(raw) - set(PHASES))
    if extra:
        raise AgentError(f"unknown config key 'hooks.{extra[0]}' (one of {', '.join(PHASES)})")
    out: Dict[str, List[Hook]] = {}
    for phase in PHASES:
        entries = raw.get(phase) or []
        if not isinstance(entries, list):
            raise AgentError(f"config key 'hooks.{phase}' must be a list")
        hooks = []
        for i, entry in enumerate(entries):
            key = f"hooks.{phase}[{i}]"
            if isinstance(entry, str):
                entry = {"command": entry}
            if not isinstance(entry, dict):
                raise AgentError(f"config key '{key}' must be an object with command, timeout_s")
            unknown = sorted(set(entry) - {"command", "timeout_s"})
            if unknown:
                raise AgentError(f"unknown config key '{key}.{unknown[0]}'")
            command = entry.get("command")
            if not isinstance(command, str) or not command.strip():
                raise AgentError(f"config key '{key}.command' must be a non-empty string")
            timeout = entry.get("timeout_s", DEFAULT_TIMEOUT_S)
            if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
                raise AgentError(f"config key '{key}.timeout_s' must be an integer >= 1")
            hooks.append(Hook(phase, i, command, timeout))
        if hooks:
            out[phase] = hooks
    return out


def run_phase(
    hooks: Mapping[str, List[Hook]], phase: str, env: Optional[Mapping[str, str]] = None
) -> List[str]:
    """Run a phase's hooks in order, stopping at the first that fails; its message, or []."""
    for hook in hooks.get(phase, []):
        message = run_one(hook, env)
        if message:
            return [message]
    return []


def on_error(hooks: Mapping[str, List[Hook]], env: Mapping[str, str], error: str) -> List[str]:
    """The on_error hooks, told what failed (SAVEOS_ERROR); what they said when they failed."""
    return run_phase(hooks, "on_error", {**env, "SAVEOS_ERROR": error[:2000]})


def run_one(hook: Hook, env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Run one hook in its own process group (a timeout ends the whole group, children too)."""
    full_env = {**os.environ, **(env or {}), "SAVEOS_HOOK": hook.phase}
    log.info("%s: %s", hook.label, hook.command)
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", hook.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    except OSError as exc:
        return f"{hook.label} could not start: {exc.strerror}"
    try:
        output, _ = proc.communicate(timeout=hook.timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"{hook.label} timed out after {hook.timeout_s} s (killed): {hook.command}"
    text = output.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        tail = text[-OUTPUT_KEEP:]
        said = f": {tail}" if tail else ""
        return f"{hook.label} failed (rc {proc.returncode}): {hook.command}{said}"
    if text:
        log.info("%s said: %s", hook.label, text[-OUTPUT_KEEP:])
    return None
