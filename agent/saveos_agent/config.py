"""Load and validate the agent's JSON config; every problem is one error naming the key.

Over 400 lines on purpose: every key of agent.json is checked here, beside the dataclasses it
fills, so the config's whole contract is one file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import saveos_rules as rules

from saveos_agent.errors import AgentError

SYSTEM_CONFIG = "/etc/saveos/agent.json"

_COMPRESSION = re.compile(
    r"^(none|lz4|zstd(,\d{1,2})?|zlib(,\d)?|lzma(,\d)?|auto,.+|obfuscate,.+)$"
)


def user_config_path() -> str:
    """The platform's per-user config location."""
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "SaveOS", "config.json")
    if os.name == "nt":
        base = os.environ.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
        return os.path.join(base, "SaveOS", "config.json")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, "saveos", "config.json")


def _user_data_dir() -> str:
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "SaveOS")
    if os.name == "nt":
        return os.path.join(os.environ.get("LOCALAPPDATA") or home, "SaveOS")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(base, "saveos")


def system_mode() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def default_config_path() -> str:
    return SYSTEM_CONFIG if system_mode() else user_config_path()


OFFSITE_PYTHON = "/opt/saveos/offsite-venv/bin/python"


@dataclass
class Offsite:
    """Where the offsite sync program and its own config live, and when it runs."""

    config: str
    python: str = OFFSITE_PYTHON
    interval_s: int = 86400
    after_backup: bool = False
    timeout_s: int = 6 * 3600


@dataclass
class Verify:
    """Scheduled verification (what the systemd timers or the daemon run): a borg check every
    check_interval_s (with --verify-data when the last such check is older than
    verify_data_interval_s; 0 never), a restore drill of drill_count files every
    drill_interval_s; offsets place the slots like schedule.backup_offset_s. 0: not scheduled."""

    check_interval_s: int = 0
    check_offset_s: int = 0
    verify_data_interval_s: int = 0
    drill_interval_s: int = 0
    drill_offset_s: int = 0
    drill_count: int = 20


@dataclass
class Config:
    path: str
    repository: str
    sources: List[str]
    api_url: Optional[str] = None
    # The fleet's CA (PEM) the API's certificate must chain to; None: the system's trust store.
    ca_file: Optional[str] = None
    # An API job may restore over the live files (in_place) only when this host says so.
    allow_in_place_restore_jobs: bool = False
    agent_id: Optional[int] = None
    token_file: Optional[str] = None
    passphrase_file: Optional[str] = None
    passcommand: Optional[str] = None
    excludes: List[str] = field(default_factory=list)
    retention: Dict[str, Any] = field(default_factory=dict)
    backup_interval_s: int = rules.DEFAULT_BACKUP_INTERVAL_S
    # Backups fall on slots k * interval + offset (epoch seconds, UTC); None: whenever due.
    backup_offset_s: Optional[int] = None
    heartbeat_interval_s: int = rules.DEFAULT_HEARTBEAT_INTERVAL_S
    lock_wait_s: int = 30
    # How long a backup or check started by hand (CLI, timer, API job) waits for another one
    # running on this host (e.g. the daemon's scheduled backup) before giving up as "busy".
    busy_wait_s: int = 3600
    checkpoint_interval_s: int = 300
    spool_dir: str = ""
    spool_max_reports: int = 10000
    compression: str = "zstd,3"
    log_file: Optional[str] = None
    state_dir: str = ""
    borg_binary: str = "borg"
    hostname: str = ""
    offsite: Optional["Offsite"] = None
    databases: List[Any] = field(default_factory=list)  # databases.Database
    hooks: Dict[str, List[Any]] = field(default_factory=dict)  # phase -> [hooks.Hook]
    # Where the dump FIFOs live during a backup (never data: FIFOs hold nothing on disk).
    dump_dir: str = ""
    verify: "Verify" = field(default_factory=lambda: Verify())
    # A SaveOS repository server holds the repository (append-only for this host): its name,
    # the host's Borg storage quota there, and the SSH command Borg uses (BORG_RSH).
    repository_server: Optional[str] = None
    repository_quota: Optional[str] = None
    rsh: Optional[str] = None

    @property
    def local_repository(self) -> Optional[str]:
        """The repo's filesystem path when it is local (lock files can be inspected)."""
        repo = self.repository
        if repo.startswith("file://"):
            return repo[len("file://") :]
        if "://" in repo or re.match(r"^[^/]+@[^/]+:", repo) or re.match(r"^[^/:]+:", repo):
            return None
        return repo

    @property
    def repository_path(self) -> str:
        """The repository's path on the machine that holds it (the URL's path for ssh://)."""
        match = re.match(r"^ssh://[^/]+(/.*)$", self.repository)
        return match.group(1) if match else (self.local_repository or self.repository)

    @property
    def quota_bytes(self) -> Optional[int]:
        return borg_size(self.repository_quota) if self.repository_quota else None

    def summary(self) -> Dict[str, Any]:
        return {
            "config": self.path,
            "api_url": self.api_url,
            "agent_id": self.agent_id,
            "repository": self.repository,
            "sources": self.sources,
            "excludes": self.excludes,
            "retention": self.retention,
            "schedule": {
                "backup_interval_s": self.backup_interval_s,
                "backup_offset_s": self.backup_offset_s,
                "heartbeat_interval_s": self.heartbeat_interval_s,
            },
            "spool_dir": self.spool_dir,
            "state_dir": self.state_dir,
            "compression": self.compression,
            "databases": [f"{d.type}/{d.name}" for d in self.databases],
            "hooks": {phase: len(hooks) for phase, hooks in self.hooks.items()},
            "repository_server": self.repository_server,
            "repository_quota": self.repository_quota,
        }


_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]?)$")


def borg_size(text: str) -> Optional[int]:
    """Bytes of a borg size ('500M', '1.5T': powers of 1000, as borg reads --storage-quota)."""
    match = _SIZE.match(text or "")
    if not match:
        return None
    return int(float(match.group(1)) * 1000 ** " KMGTPE".index(match.group(2) or " "))


def check_private(path: str, key: str, error: type = AgentError) -> None:
    """Refuse a secret-bearing file that group or others can read (or write), or that another
    user owns (they could widen it, or swap its content, at any time).

    `error` lets the offsite program (same zipapp) raise its own exception type."""
    rules.check_private(path, key, error)


def read_private_json(path: str, error: type = AgentError) -> Any:
    """The parsed JSON of a private (0600) config file, or `error` with a one-line reason."""
    if not os.path.exists(path):
        raise error(f"config file {path} does not exist (use --config PATH)")
    check_private(path, "config", error)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as exc:
        raise error(f"config {path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise error(f"cannot read config {path}: {exc.strerror}") from None


def _type_name(expected) -> str:
    names = {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "a bool"}
    return names.get(expected, expected.__name__)


def _expect(value: Any, expected, key: str, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        got = "null" if value is None else type(value).__name__
        raise AgentError(f"config key '{key}' must be {_type_name(expected)}, got {got}")
    return value


def _nonneg_int(value: Any, key: str, minimum: int = 0) -> int:
    _expect(value, int, key)
    if value < minimum:
        raise AgentError(f"config key '{key}' must be >= {minimum}, got {value}")
    return value


_TOP_KEYS = {
    "api_url",
    "ca_file",
    "allow_in_place_restore_jobs",
    "agent_id",
    "token_file",
    "repository",
    "passphrase_file",
    "passcommand",
    "sources",
    "excludes",
    "retention",
    "schedule",
    "lock_wait_s",
    "busy_wait_s",
    "checkpoint_interval_s",
    "spool_dir",
    "spool_max_reports",
    "compression",
    "log_file",
    "state_dir",
    "borg_binary",
    "hostname",
    "offsite",
    "databases",
    "hooks",
    "dump_dir",
    "verify",
    "repository_server",
    "repository_quota",
    "rsh",
}
_VERIFY_KEYS = set(Verify.__dataclass_fields__)
_OFFSITE_KEYS = {"config", "python", "interval_s", "after_backup", "timeout_s"}
_SCHEDULE_KEYS = {"backup_interval_s", "backup_offset_s", "heartbeat_interval_s"}


def _unknown(keys, allowed, prefix: str = "") -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise AgentError(f"unknown config key '{prefix}{extra[0]}'")


def _validate_retention(raw: Any) -> Dict[str, Any]:
    for key, problem in rules.retention_problems(raw):
        raise AgentError(f"config key '{key}' {problem}")
    return {k: v for k, v in raw.items() if v is not None}


def _validate_offsite(raw: Any, check_paths: bool) -> Offsite:
    _expect(raw, dict, "offsite")
    _unknown(raw, _OFFSITE_KEYS, "offsite.")
    if "config" not in raw:
        raise AgentError("missing config key 'offsite.config' (path of offsite.json)")
    out = Offsite(config=_expect(raw["config"], str, "offsite.config"))
    if "python" in raw:
        out.python = _expect(raw["python"], str, "offsite.python")
    for key in ("interval_s", "timeout_s"):
        if key in raw:
            setattr(out, key, _nonneg_int(raw[key], f"offsite.{key}", 1))
    if "after_backup" in raw:
        out.after_backup = _expect(raw["after_backup"], bool, "offsite.after_backup")
    for key in ("config", "python"):
        if not os.path.isabs(getattr(out, key)):
            raise AgentError(f"config key 'offsite.{key}' must be an absolute path")
    if check_paths:
        # offsite.json names the credentials file: private like every secret-bearing file
        check_private(out.config, "offsite.config")
    return out


def validate(data: Any, path: str, check_paths: bool = True) -> Config:
    if not isinstance(data, dict):
        raise AgentError(f"config {path}: top level must be a JSON object")
    _unknown(data, _TOP_KEYS)
    for key in ("repository", "sources"):
        if key not in data:
            raise AgentError(f"missing required config key '{key}'")
    system = path == SYSTEM_CONFIG or system_mode()
    data_dir = "/var/lib/saveos" if system else _user_data_dir()
    cfg = Config(
        path=path,
        repository=_expect(data["repository"], str, "repository"),
        sources=list(_expect(data["sources"], list, "sources")),
        spool_dir=os.path.join(data_dir, "spool"),
        state_dir=os.path.join(data_dir, "state"),
        dump_dir=os.path.join(data_dir, "dumps"),
    )
    if not cfg.repository.strip():
        raise AgentError("config key 'repository' must not be empty")
    if not cfg.sources:
        raise AgentError("config key 'sources' must list at least one path")
    for i, src in enumerate(cfg.sources):
        _expect(src, str, f"sources[{i}]")
        if not os.path.isabs(src):
            raise AgentError(f"config key 'sources[{i}]' must be an absolute path, got {src!r}")
        if check_paths and not os.path.exists(src):
            raise AgentError(f"config key 'sources[{i}]': {src} does not exist")

    for key in (
        "api_url",
        "ca_file",
        "token_file",
        "passphrase_file",
        "passcommand",
        "log_file",
        "repository_server",
        "repository_quota",
        "rsh",
    ):
        setattr(cfg, key, _expect(data.get(key), str, key, nullable=True))
    for key in ("spool_dir", "state_dir", "compression", "borg_binary", "hostname", "dump_dir"):
        if key in data:
            setattr(cfg, key, _expect(data[key], str, key))
    cfg.agent_id = _expect(data.get("agent_id"), int, "agent_id", nullable=True)
    if cfg.api_url:
        from saveos_agent.transport import InsecureUrl, check_api_url

        try:
            check_api_url(cfg.api_url)
        except InsecureUrl as exc:
            raise AgentError(f"config key 'api_url': {exc}") from None
    if cfg.ca_file and not os.path.isabs(cfg.ca_file):
        raise AgentError("config key 'ca_file' must be an absolute path")
    if cfg.ca_file and check_paths and not os.path.isfile(cfg.ca_file):
        raise AgentError(f"config key 'ca_file': {cfg.ca_file} does not exist")
    cfg.allow_in_place_restore_jobs = _expect(
        data.get("allow_in_place_restore_jobs", False), bool, "allow_in_place_restore_jobs"
    )
    if cfg.api_url and not cfg.token_file:
        raise AgentError("missing config key 'token_file' (required with 'api_url')")
    if cfg.passphrase_file and cfg.passcommand:
        raise AgentError("config keys 'passphrase_file' and 'passcommand' are exclusive")
    if not cfg.passphrase_file and not cfg.passcommand:
        raise AgentError("missing config key 'passphrase_file' (or 'passcommand')")
    if cfg.repository_quota and borg_size(cfg.repository_quota) is None:
        raise AgentError(
            f"config key 'repository_quota' is not a borg size like 10G: {cfg.repository_quota!r}"
        )
    if not _COMPRESSION.match(cfg.compression):
        raise AgentError(f"config key 'compression' is not a borg compression: {cfg.compression!r}")
    cfg.excludes = list(_expect(data.get("excludes", []), list, "excludes"))
    for i, pattern in enumerate(cfg.excludes):
        _expect(pattern, str, f"excludes[{i}]")
    cfg.retention = _validate_retention(data.get("retention", rules.RETENTION_DEFAULT))
    schedule = _expect(data.get("schedule", {}), dict, "schedule")
    _unknown(schedule, _SCHEDULE_KEYS, "schedule.")
    cfg.backup_interval_s = schedule.get("backup_interval_s", cfg.backup_interval_s)
    cfg.heartbeat_interval_s = schedule.get("heartbeat_interval_s", cfg.heartbeat_interval_s)
    for key, problem in rules.interval_problems(cfg.backup_interval_s, cfg.heartbeat_interval_s):
        raise AgentError(f"config key 'schedule.{key}' {problem}")
    if schedule.get("backup_offset_s") is not None:
        cfg.backup_offset_s = _nonneg_int(schedule["backup_offset_s"], "schedule.backup_offset_s")
        if cfg.backup_offset_s >= cfg.backup_interval_s:
            raise AgentError(
                "config key 'schedule.backup_offset_s' must be less than"
                " 'schedule.backup_interval_s'"
            )
    if "lock_wait_s" in data:
        cfg.lock_wait_s = _nonneg_int(data["lock_wait_s"], "lock_wait_s")
    if "busy_wait_s" in data:
        cfg.busy_wait_s = _nonneg_int(data["busy_wait_s"], "busy_wait_s")
    if "checkpoint_interval_s" in data:
        cfg.checkpoint_interval_s = _nonneg_int(
            data["checkpoint_interval_s"], "checkpoint_interval_s", 1
        )
    if "spool_max_reports" in data:
        cfg.spool_max_reports = _nonneg_int(data["spool_max_reports"], "spool_max_reports", 1)
    for key in ("token_file", "passphrase_file"):
        value = getattr(cfg, key)
        if value and check_paths:
            check_private(value, key)
    if data.get("offsite") is not None:
        cfg.offsite = _validate_offsite(data["offsite"], check_paths)
    if data.get("databases") is not None:
        from saveos_agent import databases

        cfg.databases = databases.validate(data["databases"], check_paths)
    if data.get("hooks") is not None:
        from saveos_agent import hooks

        cfg.hooks = hooks.validate(data["hooks"])
    if not os.path.isabs(cfg.dump_dir):
        raise AgentError("config key 'dump_dir' must be an absolute path")
    verify = _expect(data.get("verify", {}), dict, "verify")
    _unknown(verify, _VERIFY_KEYS, "verify.")
    for key in _VERIFY_KEYS:
        if key in verify:
            setattr(cfg.verify, key, _nonneg_int(verify[key], f"verify.{key}"))
    for kind in ("check", "drill"):
        interval, offset = getattr(cfg.verify, f"{kind}_interval_s"), f"{kind}_offset_s"
        if interval and getattr(cfg.verify, offset) >= interval:
            raise AgentError(
                f"config key 'verify.{offset}' must be less than 'verify.{kind}_interval_s'"
            )
    if not cfg.hostname:
        import socket

        cfg.hostname = socket.gethostname().split(".")[0] or "host"
    if not rules.is_valid_name(cfg.hostname):
        raise AgentError(
            f"config key 'hostname' is not a valid host name (letters, digits, '.', '_', '-',"
            f" at most {rules.NAME_MAX_LENGTH}): {cfg.hostname!r}"
        )
    return cfg


def load(path: Optional[str] = None) -> Config:
    path = path or os.environ.get("SAVEOS_AGENT_CONFIG") or default_config_path()
    return validate(read_private_json(path), path)
