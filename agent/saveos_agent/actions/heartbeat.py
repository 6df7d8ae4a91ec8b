"""`saveos-agent heartbeat`: tell the API this agent lives, run the jobs it hands out."""

from __future__ import annotations

from typing import Any, Dict

from saveos_agent import __version__, execute
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
        **({"offsite_interval_s": cfg.offsite.interval_s} if cfg.offsite else {}),
    }


def heartbeat(cfg: Config, run_jobs: bool = True) -> Dict[str, Any]:
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
    done = [run_job(cfg, job) for job in jobs] if run_jobs else []
    flushed = spool_of(cfg).flush(client)
    return {
        "status": "ok",
        "agent_id": answer.get("agent_id") if isinstance(answer, dict) else None,
        "server_time": answer.get("server_time") if isinstance(answer, dict) else None,
        "jobs": done if run_jobs else jobs,
        "spool_remaining": flushed["remaining"],
    }
