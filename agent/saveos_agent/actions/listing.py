"""The `list` job: one page of a folder of an archive, for the dashboard's restore browser.

`borg list` prints every item under the folder (type, size, mtime, path; NUL-terminated, so
any name is safe); this keeps the folder's direct children, gives each sub-folder the total
size of the files below it, and returns the page asked for, folders first, then by name.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from saveos_agent import borg_commands as bc
from saveos_agent import execute
from saveos_agent.config import Config
from saveos_agent.errors import AgentError

MAX_LIMIT = 200
MAX_PATH = 4096
# type, size, mtime, path: the path last, so a tab in a name cannot shift the fields
FORMAT = "{type}\t{size}\t{isomtime}\t{path}{NUL}"


def clean_path(path: str) -> str:
    """An archive path as borg stores it (relative, no '.', '..' or empty parts)."""
    if not isinstance(path, str) or len(path) > MAX_PATH or "\x00" in path:
        raise AgentError("list: path must be a string of at most 4096 characters without NUL")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise AgentError(f"list: path {path!r} climbs out with '..'")
    return "/".join(parts)


def parse(stdout: str) -> Iterable[Dict[str, Any]]:
    for record in stdout.split("\0"):
        if not record.strip("\n"):
            continue
        kind, size, mtime, path = record.lstrip("\n").split("\t", 3)
        yield {"type": kind, "size": int(size or 0), "mtime": mtime, "path": path}


def children(items: Iterable[Dict[str, Any]], folder: str) -> List[Dict[str, Any]]:
    """The direct children of `folder` ('' = the root), each sub-folder sized by its files."""
    prefix = folder + "/" if folder else ""
    found: Dict[str, Dict[str, Any]] = {}
    for item in items:
        path = item["path"]
        if not path.startswith(prefix) or path == folder:
            continue
        name, _, rest = path[len(prefix) :].partition("/")
        entry = found.get(name)
        if entry is None:
            entry = found[name] = {"name": name, "type": "d", "size": 0, "mtime": None}
        if rest:  # below a child folder: counts towards its size
            if item["type"] == "-":
                entry["size"] += item["size"]
        else:
            entry["type"], entry["mtime"] = item["type"], item["mtime"]
            if item["type"] != "d":
                entry["size"] = item["size"]
    return sorted(found.values(), key=lambda e: (e["type"] != "d", e["name"]))


def _safe(name: str) -> str:
    # A name that is not valid UTF-8 (borg keeps it as surrogate escapes) is shown, not sent raw.
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def list_folder(
    cfg: Config, archive: str, path: str = "", offset: int = 0, limit: int = 100
) -> Dict[str, Any]:
    if not isinstance(archive, str) or not archive or len(archive) > 255:
        raise AgentError("list: archive must be a name of 1 to 255 characters")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise AgentError("list: offset must be a non-negative integer")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise AgentError(f"list: limit must be an integer from 1 to {MAX_LIMIT}")
    folder = clean_path(path)
    result = execute.run(
        bc.list_items(
            cfg.repository,
            archive,
            paths=[folder] if folder else (),
            fmt=FORMAT,
            lock_wait=cfg.lock_wait_s,
            borg=cfg.borg_binary,
        ),
        execute.secrets_of(cfg),
    )
    if result.status == "error":
        raise AgentError(f"cannot list archive {archive}: {result.error_message}")
    items = list(parse(result.stdout))
    if folder:
        itself: Optional[Dict[str, Any]] = next((i for i in items if i["path"] == folder), None)
        if not items:
            raise AgentError(f"/{folder} is not in archive {archive}")
        if itself is not None and itself["type"] != "d":
            raise AgentError(f"/{folder} is a file in archive {archive}, not a folder")
    entries = children(items, folder)
    page = [dict(e, name=_safe(e["name"])) for e in entries[offset : offset + limit]]
    return {
        "status": "ok",
        "archive": archive,
        "path": folder,
        "total": len(entries),
        "offset": offset,
        "entries": page,
        "message": f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'} in /{folder}",
    }
