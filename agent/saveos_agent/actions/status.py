"""`saveos-agent status` and `spool`: the agent's own state, and sending what is spooled."""

from __future__ import annotations

from typing import Any, Dict

from saveos_agent import __version__, execute
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.reporting import api_client, spool_of
from saveos_agent.state import load_state


def flush(cfg: Config) -> Dict[str, Any]:
    spool = spool_of(cfg)
    client = api_client(cfg)
    if client is None:
        raise AgentError("no api_url in the config: nothing to flush to")
    outcome = spool.flush(client)
    outcome.pop("responses", None)
    outcome["status"] = "ok" if outcome["remaining"] == 0 else "warning"
    return outcome


def status(cfg: Config) -> Dict[str, Any]:
    spool = spool_of(cfg)
    state = load_state(cfg)
    return {
        "status": "ok",
        "agent_version": __version__,
        "borg_version": execute.borg_version(cfg.borg_binary),
        "spool_depth": spool.depth(),
        "spool_rejected": spool.rejected(),
        "spool_max_reports": cfg.spool_max_reports,
        "last_backup_at": state.get("last_backup_at"),
        "last_backup_status": state.get("last_backup_status"),
        "last_archive": state.get("last_archive"),
        "last_attempt_at": state.get("last_attempt_at"),
        "last_offsite_at": state.get("last_offsite_at"),
        "last_offsite_result": state.get("last_offsite_result"),
        "config": cfg.summary(),
    }
