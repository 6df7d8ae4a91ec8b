"""`saveos-agent offsite sync`: run the offsite program in its virtualenv, report what it did.

The program (saveos_offsite, shipped inside the zipapp) needs boto3, so it runs under the offsite
virtualenv's python as a subprocess; the agent core stays standard library only. Its credentials
file is read by that program alone: nothing secret goes through argv or this process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import Any, Dict, Optional

from saveos_rules import OFFSITE_RESULTS

import saveos_agent
from saveos_agent import logsetup
from saveos_agent.clock import iso, utcnow
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.reporting import report
from saveos_agent.spool import new_report_id
from saveos_agent.state import save_state

log = logging.getLogger("saveos_agent.offsite")

_REPORT_FIELDS = (
    "started_at",
    "finished_at",
    "duration_s",
    "objects",
    "objects_uploaded",
    "bytes_uploaded",
    "objects_deleted",
    "target",
)


def program_path() -> str:
    """The directory (or zipapp) that holds both saveos_agent and saveos_offsite."""
    return os.path.dirname(os.path.dirname(os.path.abspath(saveos_agent.__file__)))


def program_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
    env["PYTHONPATH"] = program_path()
    env.pop("PYTHONHOME", None)
    return env


def run_program(cfg: Config, command: str, *extra: str) -> Dict[str, Any]:
    """Run `python -m saveos_offsite COMMAND --config ...` and parse its one JSON line."""
    offsite = cfg.offsite
    if offsite is None:
        raise AgentError("no 'offsite' section in the agent config")
    if not os.access(offsite.python, os.X_OK):
        raise AgentError(
            f"offsite.python: {offsite.python} is not executable (is the offsite virtualenv "
            "installed? redeploy with saveos_agent_offsite_bucket set)"
        )
    argv = [offsite.python, "-m", "saveos_offsite", command, "--config", offsite.config, *extra]
    try:
        proc = subprocess.run(
            argv,
            env=program_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=offsite.timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "result": "error", "message": "offsite sync timed out"}
    for line in proc.stderr.splitlines():
        if line.strip():
            log.info("offsite: %s", logsetup.mask(line))
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
        if not isinstance(result, dict):
            raise ValueError
    except (IndexError, ValueError):
        tail = logsetup.mask(proc.stderr.strip()[-300:])
        return {
            "status": "error",
            "result": "error",
            "message": f"offsite program exited {proc.returncode} without a result: {tail}",
        }
    return result


def report_body(result: Dict[str, Any], started: str, finished: str) -> Dict[str, Any]:
    """The API's offsite report of one run of the program (the agent's, or the controller's for
    a copy the repository server made)."""
    body: Dict[str, Any] = {"report_id": new_report_id()}
    body.update({k: result[k] for k in _REPORT_FIELDS if result.get(k) is not None})
    body.setdefault("started_at", started)
    body.setdefault("finished_at", finished)
    body["result"] = result.get("result", "error")
    if body["result"] not in OFFSITE_RESULTS:
        body["result"] = "error"
    body["message"] = str(result.get("message", ""))[:2000]
    return body


def sync(cfg: Config, job_id: Optional[int] = None) -> Dict[str, Any]:
    started = iso(utcnow())
    save_state(cfg, last_offsite_attempt_at=started)
    result = run_program(cfg, "sync")
    body = report_body(result, started, iso(utcnow()))
    if job_id is not None:
        body["job_id"] = job_id
    if body["result"] == "ok":
        save_state(cfg, last_offsite_at=body["finished_at"])
    save_state(cfg, last_offsite_result=body["result"])
    sent = report(cfg, "offsite", body)
    out = dict(result)
    out.setdefault("status", "error")
    out.update(report_id=sent["report_id"], reported=sent["reported"])
    return out
