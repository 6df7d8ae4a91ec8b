"""What runs on this host right now, for the heartbeat to say ("running: backup since 10:02").

Every backup, check, drill and restore leaves a marker file in state_dir/running while it runs,
whichever process runs it (a systemd service, the daemon's worker, a command typed by hand). The
heartbeat lists the markers whose process is alive, so a backup that takes hours shows as
running instead of leaving the API to guess, and a marker left by a killed process is ignored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from typing import Any, Dict, Iterator, List, Optional

from saveos_rules import write_atomically

from saveos_agent import locks

MAX_REPORTED = 16  # the API's limit on `running`


def _dir(cfg) -> str:
    return os.path.join(cfg.state_dir, "running")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def running(cfg, kind: str, job_id: Optional[int] = None) -> Iterator[None]:
    """Marks `kind` as running for as long as the block runs."""
    os.makedirs(_dir(cfg), mode=0o700, exist_ok=True)
    name = f"{os.getpid()}-{threading.get_ident()}-{kind}.json"
    path = os.path.join(_dir(cfg), name)
    marker: Dict[str, Any] = {"kind": kind, "started_at": _now(), "pid": os.getpid()}
    if job_id is not None:
        marker["job_id"] = int(job_id)
    write_atomically(path, json.dumps(marker).encode(), 0o644)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def current(cfg) -> List[Dict[str, Any]]:
    """[{kind, job_id?, started_at}] of the live markers, oldest first; stale ones removed."""
    try:
        names = os.listdir(_dir(cfg))
    except OSError:
        return []
    found = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(_dir(cfg), name)
        try:
            with open(path, encoding="utf-8") as fh:
                marker = json.load(fh)
            pid = int(marker.pop("pid"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if not locks.pid_alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(path)  # left by a process that died (SIGKILL, power loss)
            continue
        found.append(marker)
    found.sort(key=lambda m: str(m.get("started_at")))
    return found[:MAX_REPORTED]
