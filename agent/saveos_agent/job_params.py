"""The allow-listed parameters of every job kind: the one definition, checked by the API when a
job is queued and by the agent before it runs one (the API or the network path may lie).

A kind is one entry of SCHEMAS: its parameter names, each with the check that returns the
clean value or raises JobParamError; a kind may add a rule across its fields in RULES. Names
and paths that could be read as an option (a leading '-') are refused here, for jobs and for
the CLI's and playbooks' restores alike (actions.restore calls restore_target/archive_name).
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any, Callable, Dict, List, Optional

from saveos_agent.errors import AgentError

# Borg archive names the agent makes are <host>-<UTC time>; none starts with '-' or holds '/'.
_ARCHIVE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@-]{0,254}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATHS = 1000
MAX_PATH_LEN = 4096


class JobParamError(AgentError):
    """A parameter a job kind does not allow, or a value its check refuses."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise JobParamError(field, "must be true or false")
    return value


def integer(low: int, high: int) -> Callable[[Any, str], int]:
    def check(value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise JobParamError(field, f"must be an integer from {low} to {high}")
        return value

    return check


def number(low: float, high: float) -> Callable[[Any, str], float]:
    def check(value: Any, field: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise JobParamError(field, f"must be a number from {low} to {high}")
        return float(value)

    return check


def archive_name(value: Any, field: str = "archive") -> str:
    """An archive name ('latest' too) that borg cannot take for an option or a path."""
    if not isinstance(value, str) or not _ARCHIVE.match(value):
        raise JobParamError(
            field,
            "must be an archive name (letters, digits, . _ : + @ -; not starting with '-')",
        )
    return value


def archive_path(value: Any, field: str = "paths") -> str:
    """A path inside an archive: relative to its root (a leading '/' is dropped), without
    '..', control characters, or a first character '-' that borg would read as an option."""
    if not isinstance(value, str) or not value.strip("/"):
        raise JobParamError(field, "must be a non-empty path")
    if len(value) > MAX_PATH_LEN or _CONTROL.search(value):
        raise JobParamError(field, f"{value[:80]!r} is too long or holds control characters")
    relative = value.lstrip("/")
    if relative.startswith("-"):
        raise JobParamError(field, f"{value!r} starts with '-' (it would be read as an option)")
    if ".." in relative.split("/"):
        raise JobParamError(field, f"{value!r} has a '..' component")
    return relative


def path_list(value: Any, field: str = "paths") -> List[str]:
    if not isinstance(value, list) or len(value) > MAX_PATHS:
        raise JobParamError(field, f"must be a list of at most {MAX_PATHS} paths")
    return [archive_path(item, f"{field}[{i}]") for i, item in enumerate(value)]


def folder_path(value: Any, field: str = "path") -> str:
    """A folder inside an archive, "" (or "/") for its root; else as archive_path."""
    if isinstance(value, str) and not value.strip("/"):
        return ""
    return archive_path(value, field)


def target_dir(value: Any, field: str = "target") -> str:
    """An absolute, normalised directory other than '/', not read as an option."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise JobParamError(field, "must be an absolute path")
    if len(value) > MAX_PATH_LEN or _CONTROL.search(value):
        raise JobParamError(field, "is too long or holds control characters")
    if posixpath.normpath(value) != value.rstrip("/") or ".." in value.split("/"):
        raise JobParamError(field, f"{value!r} is not a normalised path")
    if value.rstrip("/") == "":
        raise JobParamError(field, "must not be / (that is an in-place restore)")
    return value.rstrip("/")


def _drill_rules(params: Dict[str, Any]) -> None:
    if "count" in params and "percent" in params:
        raise JobParamError("count", "give count or percent, not both")


def _list_rules(params: Dict[str, Any]) -> None:
    if "archive" not in params:
        raise JobParamError("archive", "a list job needs the archive to list")


def _restore_rules(params: Dict[str, Any]) -> None:
    if params.get("in_place") and "target" in params:
        raise JobParamError("target", "an in-place restore takes no target")
    if not params.get("in_place") and "target" not in params:
        raise JobParamError("target", "a restore job needs a target directory")


SCHEMAS: Dict[str, Dict[str, Callable[[Any, str], Any]]] = {
    "backup": {},
    "check": {"verify_data": boolean},
    "drill": {"count": integer(1, 100000), "percent": number(0.01, 100)},
    "restore": {
        "archive": archive_name,
        "paths": path_list,
        "target": target_dir,
        "in_place": boolean,
    },
    # One page of a folder's direct children (the dashboard's archive browser).
    "list": {
        "archive": archive_name,
        "path": folder_path,
        "offset": integer(0, 10**9),
        "limit": integer(1, 200),
    },
}
RULES: Dict[str, Callable[[Dict[str, Any]], None]] = {
    "drill": _drill_rules,
    "restore": _restore_rules,
    "list": _list_rules,
}


def validate(kind: Any, params: Optional[Any]) -> Dict[str, Any]:
    """The clean parameters of a job of `kind`; JobParamError naming the first bad field."""
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise JobParamError("kind", f"unknown job kind {kind!r} (known: {', '.join(SCHEMAS)})")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise JobParamError("params", "must be an object")
    clean: Dict[str, Any] = {}
    for name, value in params.items():
        check = schema.get(name)
        if check is None:
            allowed = ", ".join(schema) or "none"
            raise JobParamError(
                str(name)[:64], f"not a parameter of {kind} jobs (allowed: {allowed})"
            )
        if value is not None:
            clean[name] = check(value, name)
    rule = RULES.get(kind)
    if rule is not None:
        rule(clean)
    return clean
