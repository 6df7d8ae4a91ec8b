"""`saveos-agent heartbeat`: tell the API this agent lives and what it runs; queue its jobs."""

from __future__ import annotations

from typing import Any, Dict, List

from saveos_agent import __version__, activity, execute, jobqueue
from saveos_agent.actions.jobs import run_job
from saveos_agent.api_client import ApiUnavailable
from saveos_agent.clock import iso, utcnow
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.reporting import api_client, spool_of
from saveos_agent.state import save_state


def heartbeat_body(cfg: Config) -> Dict[str, Any]:
    import platform  # imported where used: a backup's start does not need them
    import socket

    return {
        "agent_version": __version__,
        "borg_version": execute.borg_version(cfg.borg_binary, cfg.state_dir or None),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": socket.gethostname(),
        "backup_interval_s": cfg.backup_interval_s,
        "heartbeat_interval_s": cfg.heartbeat_interval_s,
        "facts": {"python": platform.python_version(), "spool_depth": spool_of(cfg).depth()},
        "running": activity.current(cfg),
        **({"offsite_interval_s": cfg.offsite.interval_s} if cfg.offsite else {}),
    }


def heartbeat(cfg: Config, run_jobs: bool = True, queue_only: bool = False) -> Dict[str, Any]:
    """One heartbeat. The jobs it hands out are queued on disk and run apart (jobqueue), so a
    long job never holds up the next heartbeat: by the jobs unit on systemd hosts, by the
    daemon's worker (queue_only), or here before returning when neither exists (by hand)."""
    client = api_client(cfg)
    if client is None:
        raise AgentError("no api_url/token_file in the config: cannot heartbeat")
    try:
        status_code, answer = client.post("/api/v1/agents/heartbeat", heartbeat_body(cfg))
    except ApiUnavailable as exc:
        return {"status": "warning", "message": str(exc), "jobs": []}
    if status_code in (401, 403):
        raise AgentError(f"API refused the agent token ({status_code}): {answer}")
    if status_code >= 300:
        raise AgentError(f"heartbeat failed ({status_code}): {answer}")
    save_state(cfg, last_heartbeat_at=iso(utcnow()))
    jobs = answer.get("jobs", []) if isinstance(answer, dict) else []
    done: List[Dict[str, Any]] = []
    runner = "none"
    if jobs and run_jobs:
        jobqueue.add(cfg, jobs)
        if queue_only:
            runner = "daemon"
        elif jobqueue.systemd_runner():
            jobqueue.start_systemd_runner()
            runner = "systemd"
        else:
            runner = "inline"
            done = jobqueue.run_pending(cfg, run_job)
    flushed = spool_of(cfg).flush(client)
    return {
        "status": "ok",
        "agent_id": answer.get("agent_id") if isinstance(answer, dict) else None,
        "server_time": answer.get("server_time") if isinstance(answer, dict) else None,
        "jobs": done if runner == "inline" else jobs,
        "job_runner": runner,
        "spool_remaining": flushed["remaining"],
    }
