"""Browsing an archive and restoring from it: the `list` job, its cache, the restore's input.

Listing a directory of an archive runs `borg list` on the host, through a job of kind `list`
(params: archive, path, offset, limit; the agent answers one page of the directory's direct
children with sizes and mtimes). A page listed in the last LIST_REUSE_S is shown again
instead of queueing the same listing twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from saveos_api.models import Job, utcnow

LIST_PAGE = 100
LIST_REUSE_S = 600
MAX_PATH = 4096
MAX_RESTORE_PATHS = 100


class BadPath(ValueError):
    pass


def archive_path(raw: str) -> str:
    """An archive path as borg stores it: relative, '/'-separated, no '.' or '..' parts
    ('' is the archive's root)."""
    if len(raw) > MAX_PATH or "\x00" in raw:
        raise BadPath("the path is longer than 4096 characters or holds a NUL")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadPath(f"the path {raw!r} climbs out with '..'")
    return "/".join(parts)


def restore_target(raw: str) -> str:
    """The directory on the host to restore into: absolute, normalised, never '/'."""
    raw = raw.strip()
    if not raw.startswith("/"):
        raise BadPath(f"the target directory {raw!r} is not an absolute path (e.g. /var/tmp/r)")
    target = archive_path(raw)
    if not target:
        raise BadPath("the target directory cannot be / (that would overwrite the host)")
    if len(target) > 1024:
        raise BadPath("the target directory is longer than 1024 characters")
    return "/" + target


def list_params(archive: str, path: str, offset: int) -> dict[str, Any]:
    return {"archive": archive, "path": path, "offset": offset, "limit": LIST_PAGE}


def reusable_listing(session: Session, agent_id: int, params: dict[str, Any]) -> Job | None:
    """A recent list job with the same params that did not fail (queued, running or done)."""
    since = utcnow() - timedelta(seconds=LIST_REUSE_S)
    recent = session.scalars(
        sa.select(Job)
        .where(
            Job.agent_id == agent_id,
            Job.kind == "list",
            Job.created_at >= since,
            Job.state.in_(("queued", "running", "succeeded")),
        )
        .order_by(Job.id.desc())
        .limit(200)
    )
    return next((job for job in recent if job.params == params), None)


def parent_of(path: str) -> str | None:
    if not path:
        return None
    return path.rpartition("/")[0]


def crumbs(path: str) -> list[tuple[str, str]]:
    """(name, path) of each level from the root down to `path`."""
    out = [("/", "")]
    parts = path.split("/") if path else []
    for index, name in enumerate(parts):
        out.append((name, "/".join(parts[: index + 1])))
    return out
