"""The long-running agent: heartbeats, scheduled backups, queued jobs; survives API outages."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional

from saveos_agent import execute, locks
from saveos_agent.actions import backup, heartbeat, offsite
from saveos_agent.clock import parse_epoch
from saveos_agent.config import Config
from saveos_agent.errors import AgentBusy, AgentError
from saveos_agent.state import load_state

log = logging.getLogger("saveos_agent.daemon")

# after a failed backup, retry sooner than a whole interval, but not in a tight loop
RETRY_AFTER_S = 600


def next_slot(after: float, interval: int, offset: int) -> float:
    """The first backup slot (k * interval + offset) strictly after `after`."""
    return ((after - offset) // interval + 1) * interval + offset


def backup_due(cfg: Config, now: float, started_at: Optional[float] = None) -> bool:
    """Is a scheduled backup due? With a slot offset (what the systemd timer does elsewhere), the
    first backup waits for the host's slot instead of starting the moment the daemon starts."""
    state = load_state(cfg)
    last_ok = parse_epoch(state.get("last_backup_at"))
    last_try = parse_epoch(state.get("last_attempt_at"))
    if cfg.backup_offset_s is not None:
        base = last_ok if last_ok is not None else (started_at if started_at is not None else now)
        if now < next_slot(base, cfg.backup_interval_s, cfg.backup_offset_s):
            return False
    elif last_ok is not None and now < last_ok + cfg.backup_interval_s:
        return False
    if last_try is not None and (last_ok is None or last_try > last_ok):
        return now >= last_try + min(cfg.backup_interval_s, RETRY_AFTER_S)
    return True


def offsite_due(cfg: Config, now: float) -> bool:
    """The offsite copy's own timer: after_backup syncs usually keep it from ever firing."""
    if cfg.offsite is None:
        return False
    state = load_state(cfg)
    last_ok = parse_epoch(state.get("last_offsite_at"))
    last_try = parse_epoch(state.get("last_offsite_attempt_at"))
    if last_ok is not None and now < last_ok + cfg.offsite.interval_s:
        return False
    if last_try is not None and (last_ok is None or last_try > last_ok):
        return now >= last_try + min(cfg.offsite.interval_s, RETRY_AFTER_S)
    return True


class Pidfile:
    def __init__(self, path: Optional[str]):
        self.path = path

    def __enter__(self) -> "Pidfile":
        if not self.path:
            return self
        try:
            with open(self.path) as fh:
                other = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            other = 0
        if other and other != os.getpid() and locks.pid_alive(other):
            raise AgentError(f"another agent daemon runs with pid {other} ({self.path})")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(tmp, self.path)
        return self

    def __exit__(self, *exc) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as fh:
                mine = int(fh.read().strip() or 0) == os.getpid()
            if mine:
                os.unlink(self.path)
        except (OSError, ValueError):
            pass


def run(cfg: Config, pidfile: Optional[str] = None, max_loops: Optional[int] = None) -> int:
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.warning("signal %d: stopping (running borg is asked to stop cleanly)", signum)
        stop.set()
        execute.interrupt_running()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Pidfile(pidfile):
        log.info("daemon started (pid %d)", os.getpid())
        started_at = time.time()
        next_heartbeat = 0.0
        loops = 0
        while not stop.is_set():
            now = time.time()
            if now >= next_heartbeat and cfg.api_url:
                next_heartbeat = now + cfg.heartbeat_interval_s
                try:
                    outcome = heartbeat.heartbeat(cfg)
                    if outcome["status"] != "ok":
                        log.warning("heartbeat: %s", outcome.get("message"))
                except AgentError as exc:
                    log.error("heartbeat: %s", exc.message)
                except Exception:  # noqa: BLE001 - one bad loop must not end the schedule
                    log.exception("heartbeat failed unexpectedly")
            if not stop.is_set() and backup_due(cfg, time.time(), started_at):
                try:
                    # a backup started by hand is running: it makes this one unnecessary, and
                    # waiting for it would stall the heartbeats; look again on the next loop
                    outcome = backup.backup(cfg, trigger="daemon schedule", wait_s=0)
                    log.info("backup %s: %s", outcome["status"], outcome["message"])
                except AgentBusy as exc:
                    log.info("scheduled backup not started: %s", exc.message)
                except AgentError as exc:
                    log.error("backup: %s", exc.message)
                except Exception:  # noqa: BLE001 - one bad loop must not end the schedule
                    log.exception("scheduled backup failed unexpectedly")
            if not stop.is_set() and offsite_due(cfg, time.time()):
                try:
                    outcome = offsite.sync(cfg)
                    log.info("offsite sync %s: %s", outcome["status"], outcome.get("message"))
                except AgentError as exc:
                    log.error("offsite sync: %s", exc.message)
            loops += 1
            if max_loops is not None and loops >= max_loops:
                break
            wait = max(1.0, next_heartbeat - time.time()) if cfg.api_url else 30.0
            stop.wait(min(wait, 30.0))
        log.info("daemon stopped")
    return 0
