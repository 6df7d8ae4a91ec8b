"""The long-running agent: heartbeats, scheduled backups, queued jobs; survives API outages."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional

from saveos_rules import write_atomically

from saveos_agent import execute, locks
from saveos_agent.actions import backup, heartbeat, jobs, offsite
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
        write_atomically(self.path, f"{os.getpid()}\n".encode(), 0o644)
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
    """Heartbeats on this thread, work (jobs, scheduled backups, checks, drills, offsite) on a
    worker thread: a backup that takes hours never holds up a heartbeat."""
    stop = threading.Event()
    wake = threading.Event()  # a heartbeat queued jobs: the worker looks at once

    def on_signal(signum, _frame):
        log.warning("signal %d: stopping (running borg is asked to stop cleanly)", signum)
        stop.set()
        wake.set()
        execute.interrupt_running()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Pidfile(pidfile):
        log.info("daemon started (pid %d)", os.getpid())
        started_at = time.time()
        worker = threading.Thread(
            target=_work_loop,
            args=(cfg, stop, wake, started_at, max_loops),
            name="saveos-agent-worker",
            daemon=True,
        )
        worker.start()
        loops = 0
        while not stop.is_set():
            beat_at = time.time()
            if cfg.api_url:
                _heartbeat(cfg)
                wake.set()
            loops += 1
            if max_loops is not None and loops >= max_loops:
                break
            # the next beat one interval after this one began, whatever the worker does
            wait = cfg.heartbeat_interval_s - (time.time() - beat_at) if cfg.api_url else 30.0
            if jobs.interactive():  # someone browses an archive: answer the next click fast
                wait = min(wait, jobs.INTERACTIVE_BEAT_S)
            stop.wait(max(0.5, min(wait, 30.0)) if cfg.api_url else 30.0)
        if max_loops is not None:
            worker.join()  # tests: let the bounded worker finish its rounds
        stop.set()
        wake.set()
        worker.join(timeout=60)
        log.info("daemon stopped")
    return 0


def _heartbeat(cfg: Config) -> None:
    try:
        outcome = heartbeat.heartbeat(cfg, queue_only=True)
        if outcome["status"] != "ok":
            log.warning("heartbeat: %s", outcome.get("message"))
    except AgentError as exc:
        log.error("heartbeat: %s", exc.message)
    except Exception:  # noqa: BLE001 - one bad loop must not end the schedule
        log.exception("heartbeat failed unexpectedly")


def _work_loop(
    cfg: Config,
    stop: threading.Event,
    wake: threading.Event,
    started_at: float,
    max_loops: Optional[int] = None,
) -> None:
    from saveos_agent import jobqueue, verify_schedule

    rounds = 0
    while not stop.is_set():
        wake.clear()
        steps = (
            ("queued jobs", lambda: jobqueue.pending(cfg), lambda: jobs.run_jobs(cfg)),
            (
                "scheduled backup",
                lambda: backup_due(cfg, time.time(), started_at),
                # a backup started by hand is running: it makes this one unnecessary
                lambda: backup.backup(cfg, trigger="daemon schedule", wait_s=0),
            ),
            ("offsite sync", lambda: offsite_due(cfg, time.time()), lambda: _offsite(cfg)),
            (
                "scheduled check",
                lambda: verify_schedule.check_due(cfg, time.time(), started_at),
                lambda: verify_schedule.scheduled_check(cfg, wait_s=0),
            ),
            (
                "scheduled drill",
                lambda: verify_schedule.drill_due(cfg, time.time(), started_at),
                lambda: verify_schedule.scheduled_drill(cfg),
            ),
        )
        for what, due, do in steps:
            if stop.is_set():
                break
            try:
                if not due():
                    continue
                outcome = do()
                log.info("%s %s: %s", what, outcome.get("status"), outcome.get("message", ""))
            except AgentBusy as exc:
                log.info("%s not started: %s", what, exc.message)
            except AgentError as exc:
                log.error("%s: %s", what, exc.message)
            except Exception:  # noqa: BLE001 - one bad step must not end the schedule
                log.exception("%s failed unexpectedly", what)
        rounds += 1
        if max_loops is not None and rounds >= max_loops:
            return
        wake.wait(30.0)


def _offsite(cfg: Config) -> dict:
    return offsite.sync(cfg)
