"""The agent's state file (state_dir/state.json): last backup, check, drill, offsite, heartbeat."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

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
    state = load_state(cfg)
    state.update(updates)
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    tmp = _state_path(cfg) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, _state_path(cfg))
