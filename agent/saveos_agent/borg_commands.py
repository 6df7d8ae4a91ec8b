"""Pure builders of borg argv tuples. Nothing here runs a process or reads a secret."""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence, Tuple

Argv = Tuple[str, ...]

# Retention keys of the agent config and the borg prune flag each maps to.
RETENTION_FLAGS = (
    ("keep_within", "--keep-within"),
    ("keep_last", "--keep-last"),
    ("keep_hourly", "--keep-hourly"),
    ("keep_daily", "--keep-daily"),
    ("keep_weekly", "--keep-weekly"),
    ("keep_monthly", "--keep-monthly"),
    ("keep_yearly", "--keep-yearly"),
)


def _common(borg: str, command: Sequence[str], lock_wait: Optional[int]) -> Argv:
    argv = (borg, *command, "--log-json")
    if lock_wait is not None:
        argv += ("--lock-wait", str(int(lock_wait)))
    return argv


def archive_ref(repository: str, archive: str) -> str:
    return f"{repository}::{archive}"


def init(
    repository: str,
    encryption: str = "repokey-blake2",
    *,
    make_parent_dirs: bool = False,
    borg: str = "borg",
) -> Argv:
    argv = (*_common(borg, ["init"], None), "--encryption", encryption)
    if make_parent_dirs:
        argv += ("--make-parent-dirs",)
    return argv + (repository,)


def create(
    repository: str,
    archive: str,
    sources: Sequence[str],
    *,
    excludes: Iterable[str] = (),
    compression: Optional[str] = None,
    checkpoint_interval: Optional[int] = None,
    lock_wait: Optional[int] = None,
    read_special: bool = False,
    exclude_if_present: Iterable[str] = (),
    progress: bool = False,
    borg: str = "borg",
) -> Argv:
    argv = _common(borg, ["create"], lock_wait) + ("--json",)
    if read_special:  # database dumps come in through FIFOs
        argv += ("--read-special",)
    for name in exclude_if_present:
        argv += ("--exclude-if-present", name)
    if progress:  # archive_progress lines on stderr (JSON, with --log-json)
        argv += ("--progress",)
    if compression:
        argv += ("--compression", compression)
    if checkpoint_interval is not None:
        argv += ("--checkpoint-interval", str(int(checkpoint_interval)))
    for pattern in excludes:
        argv += ("--exclude", pattern)
    return argv + (archive_ref(repository, archive), *sources)


def prune(
    repository: str,
    retention: Mapping[str, object],
    *,
    glob_archives: Optional[str] = None,
    lock_wait: Optional[int] = None,
    borg: str = "borg",
) -> Argv:
    argv = _common(borg, ["prune"], lock_wait) + ("--list", "--stats")
    for key, flag in RETENTION_FLAGS:
        value = retention.get(key)
        if value in (None, 0, ""):
            continue
        argv += (flag, str(value))
    if glob_archives:
        argv += ("--glob-archives", glob_archives)
    return argv + (repository,)


def compact(repository: str, *, lock_wait: Optional[int] = None, borg: str = "borg") -> Argv:
    return _common(borg, ["compact"], lock_wait) + (repository,)


def check(
    repository: str,
    *,
    verify_data: bool = False,
    lock_wait: Optional[int] = None,
    borg: str = "borg",
) -> Argv:
    argv = _common(borg, ["check"], lock_wait)
    if verify_data:
        argv += ("--verify-data",)
    return argv + (repository,)


def list_archives(repository: str, *, lock_wait: Optional[int] = None, borg: str = "borg") -> Argv:
    return _common(borg, ["list"], lock_wait) + ("--json", repository)


def list_items(
    repository: str,
    archive: str,
    *,
    paths: Sequence[str] = (),
    fmt: Optional[str] = None,
    lock_wait: Optional[int] = None,
    borg: str = "borg",
) -> Argv:
    """The archive's items (under `paths`, relative), as JSON lines or in borg's --format."""
    output = ("--format", fmt) if fmt else ("--json-lines",)
    argv = _common(borg, ["list"], lock_wait) + (*output, archive_ref(repository, archive))
    relative = tuple(p.lstrip("/") for p in paths)
    # After "--" a path starting with '-' is a path, never an option (as in extract).
    return argv + ("--", *relative) if relative else argv


def info(
    repository: str,
    archive: Optional[str] = None,
    *,
    lock_wait: Optional[int] = None,
    borg: str = "borg",
) -> Argv:
    target = archive_ref(repository, archive) if archive else repository
    return _common(borg, ["info"], lock_wait) + ("--json", target)


def extract(
    repository: str,
    archive: str,
    paths: Sequence[str] = (),
    *,
    lock_wait: Optional[int] = None,
    borg: str = "borg",
) -> Argv:
    # borg stores paths without the leading slash; callers may pass either form. After "--",
    # a path is a path even when it starts with '-' (borg would take it for an option).
    relative = tuple(p.lstrip("/") for p in paths)
    argv = _common(borg, ["extract"], lock_wait) + (archive_ref(repository, archive),)
    return argv + ("--", *relative) if relative else argv


def extract_stdout(
    repository: str, archive: str, path: str, *, lock_wait: Optional[int] = None, borg: str = "borg"
) -> Argv:
    """One file of the archive on stdout (a dump, straight into its loader)."""
    return _common(borg, ["extract"], lock_wait) + (
        "--stdout",
        archive_ref(repository, archive),
        path.lstrip("/"),
    )


def key_export(repository: str, out_path: str, borg: str = "borg") -> Argv:
    return (*_common(borg, ["key", "export"], None), repository, out_path)


def break_lock(repository: str, borg: str = "borg") -> Argv:
    return _common(borg, ["break-lock"], None) + (repository,)
