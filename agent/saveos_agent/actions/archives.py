"""`saveos-agent list` and `info`: what the repository holds."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from saveos_agent import borg_commands as bc
from saveos_agent import execute
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.execute import secrets_of


def list_archives(cfg: Config) -> Dict[str, Any]:
    result = execute.run(
        bc.list_archives(cfg.repository, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
        secrets_of(cfg),
    )
    if result.status == "error":
        raise AgentError(f"borg list failed: {result.error_message}")
    data = result.json() or {}
    archives = [
        {"name": a.get("name"), "start": a.get("start"), "id": a.get("id")}
        for a in data.get("archives", [])
    ]
    return {"status": result.status, "repository": cfg.repository, "archives": archives}


def info(cfg: Config, archive: Optional[str] = None) -> Dict[str, Any]:
    result = execute.run(
        bc.info(cfg.repository, archive, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
        secrets_of(cfg),
    )
    if result.status == "error":
        raise AgentError(f"borg info failed: {result.error_message}")
    return {"status": result.status, "info": result.json()}


def archive_names(cfg: Config) -> List[str]:
    """Every complete archive, oldest first (checkpoints left out)."""
    return [
        a["name"]
        for a in list_archives(cfg)["archives"]
        if a["name"] and not a["name"].endswith(".checkpoint")
    ]


def latest_archive(cfg: Config) -> str:
    archives = archive_names(cfg)
    if not archives:
        raise AgentError("the repository has no archive yet: run a backup first")
    return archives[-1]
