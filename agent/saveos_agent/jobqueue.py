"""Jobs the API handed out, kept on disk until they ran: the heartbeat only hands them over.

A heartbeat that ran its jobs itself could not beat again until they ended (a first backup
takes hours, and the host would look silent). So the heartbeat writes each job to
state_dir/jobs/ and returns; a runner takes them in id order, one at a time, and removes each
once its result is spooled (a runner killed mid-job runs it again on its next start):
- on systemd hosts the heartbeat starts saveos-agent-jobs.service (`saveos-agent run-jobs`)
  without waiting for it; starting it while it runs is a no-op, and it drains the queue,
  including jobs that arrive meanwhile;
- the supervised daemon runs them in its worker thread;
- a heartbeat typed by hand (no jobs unit) runs them before it returns, as it always did.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
from typing import Any, Callable, Dict, List

from saveos_rules import write_atomically

log = logging.getLogger("saveos_agent.jobqueue")

JOBS_UNIT = "saveos-agent-jobs.service"
UNIT_DIR = "/etc/systemd/system"


def _dir(cfg) -> str:
    return os.path.join(cfg.state_dir, "jobs")


def add(cfg, jobs: List[Dict[str, Any]]) -> None:
    os.makedirs(_dir(cfg), mode=0o700, exist_ok=True)
    for job in jobs:
        path = os.path.join(_dir(cfg), f"{int(job['id']):020d}.json")
        write_atomically(path, json.dumps(job).encode(), 0o644)


def pending(cfg) -> List[str]:
    try:
        return sorted(n for n in os.listdir(_dir(cfg)) if n.endswith(".json"))
    except OSError:
        return []


def run_pending(cfg, run_job: Callable[[Any, Dict[str, Any]], Dict[str, Any]]) -> List[Dict]:
    """Run every queued job (and those queued meanwhile); [] when another runner has them."""
    os.makedirs(_dir(cfg), mode=0o700, exist_ok=True)
    done: List[Dict[str, Any]] = []
    fd = os.open(os.path.join(cfg.state_dir, "jobs.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another job runner is draining the queue")
            return done
        while True:
            names = pending(cfg)
            if not names:
                return done
            path = os.path.join(_dir(cfg), names[0])
            try:
                with open(path, encoding="utf-8") as fh:
                    job = json.load(fh)
            except (OSError, ValueError) as exc:
                log.error("dropping unreadable job file %s: %s", path, exc)
                job = None
            if job is not None:
                done.append(run_job(cfg, job))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)


def systemd_runner() -> bool:
    """The host runs systemd and the role installed the jobs unit."""
    return os.path.isdir("/run/systemd/system") and os.path.exists(
        os.path.join(UNIT_DIR, JOBS_UNIT)
    )


def start_systemd_runner() -> None:
    """Start the jobs service without waiting for it (the heartbeat must return at once)."""
    result = subprocess.run(
        ["systemctl", "start", "--no-block", JOBS_UNIT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        log.error("systemctl start %s: %s", JOBS_UNIT, result.stderr.strip())
