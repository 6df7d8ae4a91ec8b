"""Jobs the API handed out in a heartbeat answer: run each once, report its result."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict

from saveos_agent import activity, job_params, jobqueue
from saveos_agent.actions.archives import latest_archive
from saveos_agent.actions.backup import backup
from saveos_agent.actions.check import check
from saveos_agent.actions.drill import drill
from saveos_agent.actions.listing import list_folder
from saveos_agent.actions.restore import restore
from saveos_agent.config import Config
from saveos_agent.errors import AgentBusy, AgentError
from saveos_agent.reporting import report
from saveos_agent.spool import new_report_id

log = logging.getLogger("saveos_agent.actions")


# After a job someone is likely watching (the dashboard's archive browser queues one `list` job
# per folder), the daemon heartbeats every INTERACTIVE_BEAT_S for INTERACTIVE_S, and so does
# the jobs unit on systemd hosts (run_jobs), so the next click waits seconds, not a whole
# heartbeat interval. In memory: the process that runs the jobs keeps the window.
INTERACTIVE_KINDS = ("list", "restore")
INTERACTIVE_S = 120.0
INTERACTIVE_BEAT_S = 2.0
_interactive_until = [0.0]


def interactive() -> bool:
    return time.time() < _interactive_until[0]


def run_job(cfg: Config, job: Dict[str, Any]) -> Dict[str, Any]:
    """Run one queued job and spool its result (the server handed it out once)."""
    job_id, kind = job.get("id"), job.get("kind")
    if kind in INTERACTIVE_KINDS:
        _interactive_until[0] = time.time() + INTERACTIVE_S
    log.info("running job %s (%s)", job_id, kind)
    try:
        # The API checked them too; the agent trusts neither it nor the network path.
        params = job_params.validate(kind, job.get("params"))
        if params.get("in_place") and not cfg.allow_in_place_restore_jobs:
            raise AgentError(
                "in-place restores over the API are off on this host"
                " (allow_in_place_restore_jobs in its config)"
            )
        trigger = f"API job {job_id}"
        if kind == "backup":
            result = backup(cfg, job_id=job_id, trigger=trigger)
        elif kind == "check":
            result = check(
                cfg, verify_data=bool(params.get("verify_data")), job_id=job_id, trigger=trigger
            )
        elif kind == "drill":
            result = drill(
                cfg, count=params.get("count"), percent=params.get("percent"), job_id=job_id
            )
        elif kind == "restore":
            archive = params.get("archive", "latest")
            result = _restore_job(
                cfg,
                job_id,
                latest_archive(cfg) if archive == "latest" else archive,
                list(params.get("paths") or []),
                params.get("target"),
                bool(params.get("in_place")),
            )
        elif kind == "list":
            result = list_folder(
                cfg,
                params.get("archive"),
                params.get("path") or "",
                params.get("offset", 0),
                params.get("limit", 100),
            )
        else:
            raise AgentError(f"unknown job kind {kind!r}")
        state = "failed" if result.get("status") == "error" else "succeeded"
    except AgentBusy as exc:
        result, state = {"status": "error", "result": "busy", "message": exc.message}, "failed"
    except AgentError as exc:
        result, state = {"status": "error", "message": exc.message}, "failed"
    body = {"report_id": new_report_id(), "state": state, "result": result, "_path": ""}
    body["_path"] = f"/api/v1/jobs/{int(job_id)}/result"
    report(cfg, "job_result", body)
    return {"id": job_id, "kind": kind, "state": state, "result": result}


def _restore_job(cfg: Config, job_id: Any, *args: Any) -> Dict[str, Any]:
    with activity.running(cfg, "restore", job_id):
        return restore(cfg, *args)


def _stay_while_interactive(cfg: Config) -> list:
    from saveos_agent.actions.heartbeat import heartbeat  # it imports run_job from here

    done: list = []
    while interactive():
        time.sleep(INTERACTIVE_BEAT_S)
        try:
            heartbeat(cfg, queue_only=True)  # the jobs go to the queue; this process runs them
        except AgentError as exc:  # a refused token: the timer's heartbeat will say so
            log.error("interactive heartbeat: %s", exc)
            break
        done += jobqueue.run_pending(cfg, run_job)
    return done


def run_jobs(cfg: Config, stay_interactive: bool = False) -> Dict[str, Any]:
    """Run the queued jobs (saveos-agent-jobs.service, the daemon's worker).

    stay_interactive (the jobs unit on systemd hosts): after a job someone watches, keep
    heartbeating every INTERACTIVE_BEAT_S and run what they bring until the window closes,
    as the daemon does. Without it the archive browser's next folder would wait for the
    heartbeat timer's next tick (a whole heartbeat interval) on every click."""
    done = jobqueue.run_pending(cfg, run_job)
    if stay_interactive and cfg.api_url:
        done += _stay_while_interactive(cfg)
    failed = [j for j in done if j["state"] != "succeeded"]
    return {"status": "warning" if failed else "ok", "jobs": done}
