"""`saveos-agent restore`: extract an archive into a fresh directory or over the sources."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from saveos_agent import borg_commands as bc
from saveos_agent import execute, job_params
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.execute import secrets_of


def _inside(path: str, parent: str) -> bool:
    path, parent = os.path.realpath(path), os.path.realpath(parent)
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def _no_symlink(target: str) -> None:
    """Refuse a target any component of which is a symlink: the restore would land wherever
    it points (a host's other user could plant one in a shared directory)."""
    current = "/"
    for part in [p for p in os.path.abspath(target).split("/") if p]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise AgentError(f"--target {target}: {current} is a symlink; give the real path")


def restore(
    cfg: Config, archive: str, paths: List[str], target: Optional[str], in_place: bool = False
) -> Dict[str, Any]:
    # Names and paths that borg could read as options are refused (job_params: the one rule).
    archive = job_params.archive_name(archive, "archive")
    asked = list(paths)
    paths = job_params.path_list(asked, "paths")
    if target is not None and not in_place:
        target = job_params.target_dir(os.path.abspath(target), "--target")
        _no_symlink(target)
    if in_place:
        if target not in (None, "/"):
            raise AgentError("--in-place restores over the source paths; do not give --target")
        target = "/"
    else:
        if not target:
            raise AgentError("restore needs --target DIR (or --in-place to overwrite the source)")
        if os.path.realpath(target) == os.path.realpath("/"):
            raise AgentError("--target / would overwrite the source; use --in-place to mean that")
        for src in cfg.sources:
            if _inside(target, src):
                raise AgentError(
                    f"--target {target} is inside source {src}; pick another directory"
                )
        if os.path.lexists(target) and (not os.path.isdir(target) or os.listdir(target)):
            raise AgentError(
                f"target {target} exists and is not an empty directory: nothing was restored "
                "(pick a new or empty one)"
            )
        os.makedirs(target, mode=0o700, exist_ok=True)
        _no_symlink(target)  # again: a parent may have been swapped meanwhile
    result = execute.run(
        bc.extract(cfg.repository, archive, paths, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
        secrets_of(cfg),
        cwd=target,
    )
    if result.status == "error":
        raise AgentError(f"borg extract failed: {result.error_message}")
    missing = _not_in_archive(paths, target, result.messages, in_place)
    if missing:
        # Named as the operator wrote them (borg's own archive paths have no leading /).
        spelled = {paths[i]: asked[i] for i in range(len(paths))}
        raise AgentError(f"not in archive {archive}: {', '.join(spelled[m] for m in missing)}")
    return {
        "status": result.status,
        "archive": archive,
        "paths": list(paths),
        "target": os.path.abspath(target),
        "message": "; ".join(result.messages[-5:]) or "restored",
    }


def restore_database(
    cfg: Config, archive: str, name: str, into: Optional[str] = None, force: bool = False
) -> Dict[str, Any]:
    """`restore --database NAME ARCHIVE|latest`: load the dump into its server (db_restore)."""
    from saveos_agent import db_restore
    from saveos_agent.actions.archives import archive_names

    archives = archive_names(cfg) if archive == "latest" else []
    return db_restore.restore(cfg, archive, archives, name, into, force)


def _not_in_archive(
    paths: List[str], target: str, messages: List[str], in_place: bool
) -> List[str]:
    """The requested paths borg found nothing for: it only warns ("Include pattern ... never
    matched") and exits 1. Into a fresh target, what did not appear there; in place, where the
    live files are, borg's own warning."""
    missing = []
    for path in paths:
        relative = path.lstrip("/")
        if in_place:
            absent = any(f"'{relative}' never matched" in m for m in messages)
        else:
            absent = not os.path.lexists(os.path.join(target, relative))
        if absent:
            missing.append(path)
    return missing
