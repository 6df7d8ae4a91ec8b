"""SaveOS's shared rules: the one home of each, for every part that needs it.

Standard library only, Python >= 3.9: the same file is imported by the agent (inside its zipapp,
on every host), the API, the CLI, and the role's Ansible modules (as the role's module_utils
`saveos_rules`, a link to this file). A rule changed here changes for all of them at once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import stat
import subprocess
import tempfile
from typing import Any, Dict, Optional, Tuple, Type

# ---- names -------------------------------------------------------------------------------
# What the operator names a host by (the inventory name), which is also its agent's name in
# the API and the prefix of its archives: a DNS-like label borg and file systems take as is.
NAME_MAX_LENGTH = 253
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,%d}$" % (NAME_MAX_LENGTH - 1)
_NAME = re.compile(NAME_PATTERN)


def is_valid_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name))


# ---- intervals ---------------------------------------------------------------------------
# Heartbeats more often than every 5 s cost the API more than they tell; backups more often
# than a minute apart overlap their own prune and compact. Bounded above so that date
# arithmetic never overflows.
HEARTBEAT_INTERVAL_MIN_S = 5
BACKUP_INTERVAL_MIN_S = 60
INTERVAL_MAX_S = 366 * 86400
DEFAULT_HEARTBEAT_INTERVAL_S = 60
DEFAULT_BACKUP_INTERVAL_S = 86400


def interval_problems(backup_interval_s: Any, heartbeat_interval_s: Any) -> list:
    """What is wrong with a host's schedule: (key, sentence) pairs, empty when nothing is."""
    problems = []
    for key, value, minimum in (
        ("backup_interval_s", backup_interval_s, BACKUP_INTERVAL_MIN_S),
        ("heartbeat_interval_s", heartbeat_interval_s, HEARTBEAT_INTERVAL_MIN_S),
    ):
        if not _is_int(value):
            problems.append((key, f"must be an integer, got {value!r}"))
        elif not minimum <= value <= INTERVAL_MAX_S:
            problems.append((key, f"must be between {minimum} and {INTERVAL_MAX_S}, got {value}"))
    if not problems and heartbeat_interval_s >= backup_interval_s:
        problems.append(
            (
                "heartbeat_interval_s",
                f"({heartbeat_interval_s}) must be shorter than backup_interval_s"
                f" ({backup_interval_s})",
            )
        )
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- a host's slots ----------------------------------------------------------------------
# Where a host's backups, checks and drills fall: its own minute of the backup window and its
# own weekday, both from sha1(inventory name), so a fleet spreads out and a host keeps its
# slots from one deploy to the next. The same instants as systemd OnCalendar lines (its
# timers) and as offsets from the epoch (a Thursday, 00:00 UTC; the supervised daemon's).
WEEK_S = 7 * 86400
DAY_MINUTES = 1440
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DRILL_AFTER_BACKUP_MINUTES = 120
CHECK_AFTER_BACKUP_MINUTES = 180
DRILL_WEEKDAYS_AFTER = 3  # a weekly drill three days after the weekly check
EPOCH_WEEKDAY = 3  # 1970-01-01, where the daemon's offsets count from, was a Thursday


def _whole(value: Any) -> int:
    # As Jinja's `| int`: role variables arrive as strings as often as numbers; junk is 0
    # (the role refuses such a host before it is contacted).
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _slot_offset_s(interval_s: int, minute: int, weekday: int) -> int:
    if interval_s == WEEK_S:
        return ((weekday - EPOCH_WEEKDAY) % 7 * 86400 + minute * 60) % WEEK_S
    return minute * 60 % interval_s if interval_s > 0 else 0


def _slot_calendar(interval_s: int, minute: int, weekday: int, override: str) -> list:
    """The OnCalendar values for every `interval_s` at the host's `minute` of the day (UTC)."""
    if override:
        return [override]
    if interval_s == WEEK_S:
        return [f"{WEEKDAYS[weekday % 7]} *-*-* {minute // 60:02d}:{minute % 60:02d}:00 UTC"]
    step = interval_s // 60
    if step <= 0:
        return []
    if step == 60:
        return [f"*-*-* *:{minute % 60:02d}:00 UTC"]
    if step < 60:
        return [f"*-*-* *:{minute % step:02d}/{step:02d}:00 UTC"]
    if step % 60 == 0:
        hours = ",".join(f"{h:02d}" for h in range(minute % step // 60, 24, step // 60))
        return [f"*-*-* {hours}:{minute % 60:02d}:00 UTC"]
    slots = range(minute % step, DAY_MINUTES, step)
    return [f"*-*-* {m // 60:02d}:{m % 60:02d}:00 UTC" for m in slots]


def _calendar_ok(interval_s: int, override: str) -> bool:
    """Whether a systemd timer can hold the slots: a week, or whole minutes dividing a day."""
    step = interval_s // 60
    return (
        bool(override)
        or interval_s == WEEK_S
        or (interval_s % 60 == 0 and step > 0 and DAY_MINUTES % step == 0)
    )


def host_schedule(name: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """A host's slots from its role settings (backup/check/drill/heartbeat interval_s,
    backup_window_start HH:MM, backup_window_minutes, and the *_on_calendar overrides)."""
    # sha1 spreads names (as the role's Jinja hash('sha1') did: a host keeps its slots), no secret.
    digest = hashlib.sha1(str(name).encode(), usedforsecurity=False).hexdigest()
    window = _whole(settings.get("backup_window_minutes"))
    jitter = int(digest[:8], 16) % window if window > 0 else 0
    weekday = int(digest[8:16], 16) % 7
    start = re.match(r"^([0-9]+):([0-9]+)$", str(settings.get("backup_window_start", "")))
    backup_minute = (int(start[1]) * 60 + int(start[2]) + jitter) % DAY_MINUTES if start else 0
    slots = {
        "backup": (backup_minute, weekday),
        "check": ((backup_minute + CHECK_AFTER_BACKUP_MINUTES) % DAY_MINUTES, weekday),
        "drill": (
            (backup_minute + DRILL_AFTER_BACKUP_MINUTES) % DAY_MINUTES,
            (weekday + DRILL_WEEKDAYS_AFTER) % 7,
        ),
    }
    heartbeat = _whole(settings.get("heartbeat_interval_s"))
    out: Dict[str, Any] = {
        "heartbeat_boot_s": 30 + (jitter % heartbeat if heartbeat > 0 else jitter),
        "calendars_ok": True,
    }
    for kind, (minute, day) in slots.items():
        interval = _whole(settings.get(f"{kind}_interval_s"))
        override = str(settings.get(f"{kind}_on_calendar") or "")
        out[f"{kind}_offset_s"] = _slot_offset_s(interval, minute, day)
        out[f"{kind}_calendar"] = _slot_calendar(interval, minute, day, override)
        out["calendars_ok"] = out["calendars_ok"] and _calendar_ok(interval, override)
    return out


# ---- retention ---------------------------------------------------------------------------
# What a host keeps when its config names no retention (borg prune's --keep-* flags).
RETENTION_DEFAULT: Dict[str, Any] = {
    "keep_within": "1d",
    "keep_daily": 7,
    "keep_weekly": 4,
    "keep_monthly": 6,
}
RETENTION_COUNTS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)
RETENTION_KEYS = ("keep_within",) + RETENTION_COUNTS
KEEP_WITHIN_PATTERN = r"^[1-9][0-9]*[Hdwmy]$"


def retention_problems(retention: Any) -> list:
    """What is wrong with a retention policy: (key, sentence) pairs, empty when nothing is."""
    if not isinstance(retention, dict):
        return [("retention", f"must be a mapping, got {type(retention).__name__}")]
    problems = [
        (f"retention.{key}", "is not a retention key")
        for key in sorted(set(retention) - set(RETENTION_KEYS))
    ]
    within = retention.get("keep_within")
    if within is not None and not (
        isinstance(within, str) and re.match(KEEP_WITHIN_PATTERN, within)
    ):
        problems.append(
            ("retention.keep_within", f"must look like 7d (units H d w m y), got {within!r}")
        )
    for key in RETENTION_COUNTS:
        value = retention.get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            problems.append((f"retention.{key}", f"must be an integer >= 0, got {value!r}"))
    if not problems and not within and not any(retention.get(k) for k in RETENTION_COUNTS):
        problems.append(("retention", "keeps nothing: set keep_within or a keep_* count above 0"))
    return problems


# ---- results and statuses ----------------------------------------------------------------
# A snapshot report's exit_status, as borg's exit code classifies it. A backup with warnings
# made an archive all the same: it counts as a successful backup.
ESCROW_RESULTS = ("ok", "fail")
SNAPSHOT_RESULTS = ("ok", "warning", "error")
SUCCESSFUL_BACKUP = ("ok", "warning")
CHECK_RESULTS = ("ok", "warning", "error")
DRILL_RESULTS = ("pass", "fail")
OFFSITE_RESULTS = ("ok", "error", "skipped")
# A central run on a repository (`saveos prune`, `saveos repo rollback`) and what it found;
# a `tampered` run raises the host's `tampered` status (STATUSES), an `ok` one clears it.
MAINTENANCE_KINDS = ("prune", "rollback")
MAINTENANCE_RESULTS = ("ok", "tampered", "error")
JOB_STATES = ("queued", "running", "succeeded", "failed", "expired")
# A host's status, as the API works it out (precedence: silent > tampered > locked > failing >
# never > overdue > late > ok); the alarms make `saveos status` exit 2.
STATUSES = ("ok", "late", "overdue", "failing", "silent", "never", "locked", "tampered")
ALARM_STATUSES = ("overdue", "failing", "silent", "locked", "tampered")
# Worst first, as `saveos status` and the dashboard sort hosts: the precedence, with the
# alarms ahead of "never".
SEVERITY = {
    "silent": 0,
    "tampered": 1,
    "locked": 2,
    "failing": 3,
    "overdue": 4,
    "never": 5,
    "late": 6,
    "ok": 7,
}

# One host's row of the fleet status: GET /api/v1/fleet/status sends these keys in this order,
# and `saveos status --json` passes them through (documented; keys are only ever added).
FLEET_ROW_KEYS = (
    "name",
    "id",
    "status",
    "last_heartbeat",
    "last_heartbeat_age_s",
    "last_backup_at",
    "last_backup_age_s",
    "last_archive",
    "last_snapshot_status",
    "original_size",
    "deduplicated_size",
    "last_check_at",
    "last_check_result",
    "last_drill_at",
    "last_drill_result",
    "backup_interval_s",
    "backup_grace_s",
    "heartbeat_interval_s",
    "offsite_interval_s",
    "last_offsite_at",
    "last_offsite_age_s",
    "last_offsite_result",
    "last_escrow_at",
    "last_escrow_result",
    "tampered_at",
    "reason",  # the first of the reasons in one line, with its instant ("silent since 10:02")
    "reasons",  # why the status, worst first (saveos_api.status.assess)
    "running",  # what the agent's last heartbeat said runs
    "check_interval_s",
    "drill_interval_s",
    "escrow_interval_s",
    # The agent declared an interval other than the provisioned one (saveos_api/schedule.py).
    "schedule_mismatch",
    # Deprecated (DEPRECATED_KEYS): the same values as the repository_* keys below.
    "repo_server",
    "repo_path",
    "repo_quota_bytes",
    "repo_used_bytes",
    # The latest snapshot's exit_status, by the glossary's word (docs/GLOSSARY.md); the same
    # value as last_snapshot_status, which stays for old readers (deprecated).
    "last_backup_result",
    # Where the repository lives (null server: on the host's own disk), as last reported.
    "repository_server",
    "repository_path",
    "repository_quota_bytes",
    "repository_used_bytes",
)

# Keys sent beside their glossary names with the same value, until they go (docs/GLOSSARY.md,
# "Deprecated names"): deprecated -> current. The API writes the old keys from this table, its
# schemas mark them deprecated, and `saveos status` fills the new keys from an older API's old.
DEPRECATED_KEYS = {
    "last_snapshot_status": "last_backup_result",
    "repo_server": "repository_server",
    "repo_path": "repository_path",
    "repo_quota_bytes": "repository_quota_bytes",
    "repo_used_bytes": "repository_used_bytes",
    "repo_reported_at": "repository_reported_at",  # an Agent's, not in a fleet row
}
# Those a fleet status row carries.
FLEET_ROW_DEPRECATED = {old: new for old, new in DEPRECATED_KEYS.items() if old in FLEET_ROW_KEYS}


# ---- time --------------------------------------------------------------------------------
# Instants are aware UTC datetimes, written as ISO 8601 with a "Z".


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def iso(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> _dt.datetime:
    """The instant an ISO 8601 string names ("Z" or an offset; naive is taken as UTC).
    ValueError when it is not one."""
    moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def age_text(seconds: Optional[float]) -> str:
    """A short age, as the dashboard, `saveos status` and the status reasons say it: '42 s',
    '12 min', '5 h', '2.5 d'; 'never' for None, 'in the future' below zero."""
    if seconds is None:
        return "never"
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.1f} d".replace(".0 d", " d")


def ago_text(seconds: Optional[float]) -> str:
    """age_text with 'ago' after a past age: '12 min ago', 'never', 'in the future'."""
    text = age_text(seconds)
    return text if seconds is None or seconds < 0 else text + " ago"


def duration_text(seconds: Optional[float]) -> str:
    """A span to the unit below the largest, as notices say it (a mail is read later, so it is
    exact where age_text rounds): '45s', '3m20s', '1d2h', '2d'; 'unknown' for None."""
    if seconds is None:
        return "unknown"
    seconds = max(0, int(seconds))
    for unit, size, small, sub in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            return f"{whole}{unit}{rest // sub}{small}" if rest // sub else f"{whole}{unit}"
    return f"{seconds}s"


def parse_epoch(value: Optional[str]) -> Optional[float]:
    """Seconds since the epoch of an ISO 8601 instant; None when missing or unreadable."""
    if not value:
        return None
    try:
        return parse_iso(value).timestamp()
    except ValueError:
        return None


# ---- private files -----------------------------------------------------------------------


def write_atomically(
    path: str, data: bytes, mode: int = 0o600, owner: Optional[Tuple[int, int]] = None
) -> None:
    """Write beside `path` and rename over it: never a half-written file, never through a link
    someone left in its place, and a secret is never readable by others, not even for a moment
    (mkstemp makes the file 0600; owner and mode are set before the first byte)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".saveos-")
    try:
        with os.fdopen(fd, "wb") as fh:
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def private_file_problem(path: str) -> Optional[str]:
    """Why a secret-bearing file is not private, or None: it must be a regular file that
    neither group nor others may read or write, owned by the user reading it (or root).
    Raises OSError when it cannot be looked at (missing included)."""
    if os.name != "posix":
        return None
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if mode & 0o077:
        return f"{path} is accessible by group/others (mode {mode:04o}); run: chmod 600 {path}"
    if st.st_uid not in (0, os.geteuid()):
        return (
            f"{path} is owned by uid {st.st_uid}, not by this user ({os.geteuid()}) or root;"
            f" run: chown {os.geteuid()} {path}"
        )
    return None


def read_private(path: str, error: Type[Exception] = ValueError) -> str:
    """The text of a secret-bearing file (a token, a key, a channel list), read only when
    private_file_problem() finds nothing; `error` says why not (the CLI's and the API's one
    loader of such files)."""
    try:
        problem = private_file_problem(path)
        if problem:
            raise error(problem)
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text") from None


def check_private(path: str, key: str, error: Type[Exception] = ValueError) -> None:
    """Raise `error` naming `key` when `path` is missing, unreadable or not private."""
    try:
        problem = private_file_problem(path)
    except FileNotFoundError:
        raise error(f"{key}: {path} does not exist") from None
    except OSError as exc:
        raise error(f"{key}: cannot stat {path}: {exc.strerror}") from None
    if problem:
        raise error(f"{key}: {problem}")


# ---- Borg's version ------------------------------------------------------------------------
# Every heartbeat reports it and every deploy checks it. Borg is asked once, then again only
# when what it was read from changes (an upgrade replaces its entry script or its package's
# files); the deploy's host call keeps the answer where the agent reads it, in the agent's state
# directory, so a new host's first heartbeats ask nothing.
BORG_VERSION_CACHE = "borg-version.json"


def file_stamp(path: str) -> Optional[list]:
    """What a package upgrade changes about a file: inode, size, mtime, ctime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def read_json_object(path: Optional[str]) -> Dict[str, Any]:
    """A cache file's object; {} when it is missing, unreadable or not an object."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def keep_entry(path: Optional[str], entry: Optional[dict]) -> None:
    """Writes a cache entry (0600) where its directory exists: a cache only saves work."""
    if path and entry is not None:
        with contextlib.suppress(OSError, TypeError, ValueError):
            write_atomically(path, json.dumps(entry).encode(), 0o600)


def _ask(argv: list) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False
    )


def probe_borg_version(
    borg: str = "borg", cache: Optional[str] = None
) -> Tuple[Optional[str], Optional[dict]]:
    """The installed Borg's version ('1.2.4'; None when there is none) and the cache entry to
    keep (None when it came from `cache`). A Python entry script is asked through its own
    interpreter (`import borg`, about 30 ms of CPU) instead of `borg --version`, which loads all
    of Borg (about 0.3 s)."""
    import shutil  # only here: everything imports these rules, the API and every backup too

    found_at = shutil.which(borg)
    if not found_at:
        return None, None
    path = os.path.realpath(found_at)
    cached = read_json_object(cache)
    if cached.get("borg") == path and cached.get("stat") == file_stamp(path):
        package = cached.get("package")
        unchanged = not package or cached.get("package_stat") == file_stamp(package)
        if cached.get("version") and unchanged:
            return str(cached["version"]), None
    try:
        with open(path, "rb") as fh:
            shebang = fh.readline().decode(errors="replace").strip()
    except OSError:
        return None, None
    found = package = None
    try:
        if shebang.startswith("#!") and "python" in shebang:
            code = "import borg, os; print(borg.__version__); print(os.path.dirname(borg.__file__))"
            probe = _ask([*shebang[2:].split(), "-c", code])
            lines = probe.stdout.strip().splitlines()
            if probe.returncode == 0 and len(lines) == 2:
                found, package = lines
        if not found:
            probe = _ask([path, "--version"])
            if probe.returncode != 0:
                return None, None
            found = probe.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    match = re.search(r"[0-9]+\.[0-9]+(\.[0-9]+)?", found)
    if not match:
        return None, None
    entry = {"borg": path, "stat": file_stamp(path), "version": match.group(0), "package": package}
    if package:
        entry["package_stat"] = file_stamp(package)
    return match.group(0), entry


def borg_version(borg: str = "borg", cache: Optional[str] = None) -> Optional[str]:
    """probe_borg_version, its entry kept in `cache`."""
    version, entry = probe_borg_version(borg, cache)
    keep_entry(cache, entry)
    return version
