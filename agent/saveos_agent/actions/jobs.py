"""Jobs the API handed out in a heartbeat answer: run each once, report its result."""

from __future__ import annotations

import logging
from typing import Any, Dict

from saveos_agent import activity, jobqueue
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


def run_job(cfg: Config, job: Dict[str, Any]) -> Dict[str, Any]:
    """Run one queued job and spool its result (the server handed it out once)."""
    job_id, kind = job.get("id"), job.get("kind")
    params = job.get("params") or {}
    log.info("running job %s (%s)", job_id, kind)
    try:
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
            result = _restore_job(
                cfg,
                job_id,
                str(params.get("archive") or latest_archive(cfg)),
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


def run_jobs(cfg: Config) -> Dict[str, Any]:
    """Run the queued jobs (saveos-agent-jobs.service, the daemon's worker)."""
    done = jobqueue.run_pending(cfg, run_job)
    failed = [j for j in done if j["state"] != "succeeded"]
    return {"status": "warning" if failed else "ok", "jobs": done}
