"""What the agent does, one module per action: each combines the argv builders of
borg_commands, execute.run (the one module that runs borg), the state file and the reports."""

from __future__ import annotations

RANK = {"ok": 0, "warning": 1, "error": 2}
EXIT = {"ok": 0, "pass": 0, "warning": 1, "error": 2, "fail": 2}


def worst(*statuses: str) -> str:
    return max(statuses, key=lambda s: RANK.get(s, 2))
