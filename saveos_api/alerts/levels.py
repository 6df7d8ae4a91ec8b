"""How loud each status is for notifications: a channel's --min-status is a floor on this scale.

Which status a host has is decided in saveos_api/status.py alone; this only ranks them for
routing. `never` (no backup yet: a host just deployed) is the mildest trouble, so a new host
does not page anyone unless a channel asks for `never`. A status this list does not know yet (a
new one added to status.py) ranks just below `silent`: unknown trouble is loud, not dropped.
"""

from __future__ import annotations

LEVELS = ("ok", "never", "late", "overdue", "failing", "locked", "tampered", "silent")
RECOVERED = "ok"


def level_of(status: str) -> float:
    if status in LEVELS:
        return float(LEVELS.index(status))
    return LEVELS.index("silent") - 0.5


def is_trouble(status: str | None) -> bool:
    return status is not None and status != RECOVERED
