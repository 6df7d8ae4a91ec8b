"""The agent's state file (state_dir/state.json): last backup, check, drill, offsite, heartbeat."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from saveos_rules import write_atomically

from saveos_agent.config import Config


def _state_path(cfg: Config) -> str:
    return os.path.join(cfg.state_dir, "state.json")


def load_state(cfg: Config) -> Dict[str, Any]:
    try:
        with open(_state_path(cfg), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(cfg: Config, **updates: Any) -> None:
    """Read, update and replace under a lock: the daemon's heartbeat and worker threads, the
    timers' services and commands typed by hand all write it, and none may lose another's keys."""
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    with _locked(cfg):
        state = load_state(cfg)
        state.update(updates)
        data = json.dumps(state, indent=2, sort_keys=True).encode()
        write_atomically(_state_path(cfg), data, 0o644)


class _locked:
    """flock on state_dir/state.lock (a no-op where fcntl does not exist)."""

    def __init__(self, cfg: Config):
        self.path = os.path.join(cfg.state_dir, "state.lock")
        self.fd = -1

    def __enter__(self) -> None:
        try:
            import fcntl
        except ImportError:
            return
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the flock
            self.fd = -1
