"""One borg-writing action per host (a flock with a busy wait) and the stale-lock policy."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Dict, Iterator, Optional

from saveos_agent import borg_commands as bc
from saveos_agent import execute, locks
from saveos_agent.clock import iso, utcnow
from saveos_agent.config import Config
from saveos_agent.errors import AgentBusy, AgentError

log = logging.getLogger("saveos_agent.guard")


def _guard_holder(fd: int) -> Dict[str, Any]:
    """What the running action wrote into the guard file: pid, action, trigger, started_at."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: Dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another saveos-agent action is running on this host"
    return (
        f"another saveos-agent action is running on this host: a {holder.get('action', 'backup')} "
        f"({holder.get('trigger', 'unknown trigger')}), pid {holder['pid']}, "
        f"started at {holder.get('started_at', '?')}"
    )


@contextlib.contextmanager
def agent_guard(
    cfg: Config, action: str = "backup", trigger: str = "command line", wait_s: Optional[int] = None
) -> Iterator[Dict[str, Any]]:
    """One borg-writing agent action per host at a time, so a lock we judge stale is never one
    that a sibling agent process (timer backup vs daemon job) is just taking. A second action
    waits for the running one (up to `wait_s`, default busy_wait_s), then runs; past the wait it
    raises AgentBusy naming the running action. Yields how long it waited and for whom."""
    try:
        import fcntl
    except ImportError:  # not POSIX: borg's own lock is all there is
        yield {"waited_s": 0.0}
        return
    wait_s = cfg.busy_wait_s if wait_s is None else wait_s
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(cfg.state_dir, "agent.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = time.monotonic()
        holder: Dict[str, Any] = {}
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                current = _guard_holder(fd)
                if execute.interrupted():
                    raise AgentError(
                        f"stopped by SIGTERM while waiting: {describe_holder(current)}"
                    ) from None
                if time.monotonic() - started >= wait_s:
                    raise AgentBusy(
                        f"{describe_holder(current)}; gave up after waiting "
                        f"busy_wait_s={wait_s} s: nothing was done, try again later",
                        current,
                    ) from None
                if current != holder:
                    holder = current
                    log.warning(
                        "%s; waiting up to %s s for it to finish", describe_holder(holder), wait_s
                    )
                time.sleep(0.2)
        mine = {
            "pid": os.getpid(),
            "action": action,
            "trigger": trigger,
            "started_at": iso(utcnow()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        waited = round(time.monotonic() - started, 1)
        yield {"waited_s": waited, **({"waited_for": holder} if holder else {})}
    finally:
        os.close(fd)  # closing releases the flock


def handle_stale_lock(cfg: Config) -> Optional[str]:
    """Break the repo lock when every holder is a dead process of this host; say what was done."""
    repo = cfg.local_repository
    if not repo or not os.path.isdir(repo):
        return None
    state = locks.state(repo)
    if state == "free":
        return None
    holders = ", ".join(h.describe() for h in locks.holders(repo))
    if state == "live":
        log.warning(
            "repository %s is locked by %s; waiting up to %ss", repo, holders, cfg.lock_wait_s
        )
        return None
    result = execute.run(
        bc.break_lock(cfg.repository, borg=cfg.borg_binary), execute.secrets_of(cfg)
    )
    if result.status == "error":
        raise AgentError(f"could not break stale lock ({holders}): {result.error_message}")
    message = f"broke stale lock left by {holders}"
    log.warning("%s", message)
    return message


def lock_message(cfg: Config, result: execute.BorgResult) -> str:
    repo = cfg.local_repository
    holders = ""
    if repo and os.path.isdir(repo):
        holders = ", ".join(h.describe() for h in locks.holders(repo))
    who = f" by {holders}" if holders else ""
    return (
        f"repository is locked{who}; gave up after lock_wait_s={cfg.lock_wait_s} "
        "(a live lock is never broken)"
    )
