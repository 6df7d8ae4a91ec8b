"""`saveos-agent init` and `key-export`: create the repository, export its key."""

from __future__ import annotations

import os
from typing import Any, Dict

from saveos_agent import borg_commands as bc
from saveos_agent import execute
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.execute import secrets_of


def init(cfg: Config, encryption: str = "repokey-blake2") -> Dict[str, Any]:
    """Create the repository; an existing repository is reported, never re-created."""
    repo = cfg.local_repository
    if repo and os.path.exists(os.path.join(repo, "config")):
        return {"status": "ok", "created": False, "message": "repository already exists"}
    result = execute.run(
        bc.init(cfg.repository, encryption, make_parent_dirs=bool(repo), borg=cfg.borg_binary),
        secrets_of(cfg),
    )
    if result.status == "error":
        ids = {e.get("msgid") for e in result.logs}
        if "Repository.AlreadyExists" in ids:
            return {"status": "ok", "created": False, "message": "repository already exists"}
        raise AgentError(f"borg init failed: {result.error_message}")
    return {"status": "ok", "created": True, "message": "repository created"}


def key_export(cfg: Config, out_path: str) -> Dict[str, Any]:
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    result = execute.run(
        bc.key_export(cfg.repository, out_path, borg=cfg.borg_binary), secrets_of(cfg)
    )
    if result.status == "error":
        raise AgentError(f"borg key export failed: {result.error_message}")
    os.chmod(out_path, 0o600)
    return {"status": "ok", "path": out_path}
