"""offsite.json: where the copy goes and how to authenticate; standard library only."""

from __future__ import annotations

import configparser
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Dict, Optional

from saveos_agent import config as agent_config
from saveos_rules import is_valid_name

DEFAULT_CONFIG = "/etc/saveos/offsite.json"
MIB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last one)
MIN_PART = 5 * MIB


class OffsiteError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass
class Settings:
    path: str
    bucket: str
    repository: str
    host: str
    prefix: str = "saveos"
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    credentials_file: Optional[str] = None
    profile: str = "default"
    delete_delay_s: int = 86400
    state_dir: str = "/var/lib/saveos/state"
    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 64 * MIB
    max_concurrency: int = 4
    connect_timeout_s: int = 10
    # S3 Object Lock: every object version written is locked in this mode for this many days
    # (and extended while it is current), so no credential can delete or overwrite it sooner.
    object_lock_mode: Optional[str] = None  # GOVERNANCE | COMPLIANCE
    object_lock_days: int = 0

    @property
    def key_prefix(self) -> str:
        """Every object of this host lives under `<prefix>/<host>/`."""
        return "/".join(p for p in (self.prefix.strip("/"), self.host) if p) + "/"

    @property
    def target(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"


_KEYS = {
    "bucket",
    "repository",
    "host",
    "prefix",
    "endpoint_url",
    "region",
    "credentials_file",
    "profile",
    "delete_delay_s",
    "state_dir",
    "multipart_threshold",
    "multipart_chunksize",
    "max_concurrency",
    "connect_timeout_s",
    "object_lock_mode",
    "object_lock_days",
}
_INTS = {
    "delete_delay_s": 0,
    "multipart_threshold": MIN_PART,
    "multipart_chunksize": MIN_PART,
    "max_concurrency": 1,
    "connect_timeout_s": 1,
    "object_lock_days": 0,
}
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_private(path: str, key: str) -> None:
    """Refuse a secret-bearing file that group or others could read."""
    agent_config.check_private(path, key, OffsiteError)


def _str(data: Dict[str, Any], key: str, required: bool = False) -> Optional[str]:
    value = data.get(key)
    if value is None:
        if required:
            raise OffsiteError(f"missing required config key '{key}'")
        return None
    if not isinstance(value, str) or not value.strip():
        raise OffsiteError(f"config key '{key}' must be a non-empty string")
    return value


def validate(data: Any, path: str) -> Settings:
    if not isinstance(data, dict):
        raise OffsiteError(f"config {path}: top level must be a JSON object")
    extra = sorted(set(data) - _KEYS)
    if extra:
        raise OffsiteError(f"unknown config key '{extra[0]}'")
    host = _str(data, "host") or socket.gethostname().split(".")[0]
    if not is_valid_name(host):
        raise OffsiteError(f"config key 'host' is not a valid name: {host!r}")
    bucket = _str(data, "bucket", required=True) or ""
    if not _BUCKET.match(bucket):
        raise OffsiteError(f"config key 'bucket' is not a valid S3 bucket name: {bucket!r}")
    # only `sync` reads the repository (a repository server names it per run: --repository)
    repository = _str(data, "repository") or ""
    if repository and not os.path.isabs(repository):
        raise OffsiteError("config key 'repository' must be an absolute local path")
    settings = Settings(path=path, bucket=bucket, repository=repository, host=host)
    for key in ("prefix", "endpoint_url", "region", "credentials_file", "profile", "state_dir"):
        if key in data and data[key] is not None:
            if key == "prefix" and data[key] == "":
                settings.prefix = ""
                continue
            setattr(settings, key, _str(data, key))
    if settings.endpoint_url and not re.match(r"^https?://[^\s/]+", settings.endpoint_url):
        raise OffsiteError("config key 'endpoint_url' must be an http(s) URL")
    for key, minimum in _INTS.items():
        if key in data:
            value = data[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise OffsiteError(f"config key '{key}' must be an integer >= {minimum}")
            setattr(settings, key, value)
    mode = data.get("object_lock_mode")
    if mode is not None:
        if mode not in LOCK_MODES:
            raise OffsiteError("config key 'object_lock_mode' must be GOVERNANCE or COMPLIANCE")
        settings.object_lock_mode = mode
    if bool(settings.object_lock_mode) != (settings.object_lock_days > 0):
        raise OffsiteError(
            "config keys 'object_lock_mode' and 'object_lock_days' go together "
            "(a mode and a period of at least 1 day, or neither)"
        )
    if settings.credentials_file:
        check_private(settings.credentials_file, "credentials_file")
    return settings


def load(path: Optional[str], overrides: Optional[Dict[str, str]] = None) -> Settings:
    """The config file, with `overrides` (from the command line) on top: a repository server
    keeps one config for all its hosts and names the host and repository per run."""
    path = path or DEFAULT_CONFIG
    data = agent_config.read_private_json(path, OffsiteError)
    if isinstance(data, dict) and overrides:
        data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(data, path)


def read_credentials(settings: Settings) -> Optional[Dict[str, str]]:
    """Keys from an AWS-style credentials file (INI, one profile), or None for the instance role.

    The values go straight into the boto3 client: never into argv, the environment or a log.
    """
    if not settings.credentials_file:
        return None
    check_private(settings.credentials_file, "credentials_file")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(settings.credentials_file, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error) as exc:
        # the parser's message may quote a line of the file: name only the file
        raise OffsiteError(
            f"credentials_file: {settings.credentials_file} is not an AWS credentials file "
            f"({type(exc).__name__})"
        ) from None
    if not parser.has_section(settings.profile):
        raise OffsiteError(
            f"credentials_file: no [{settings.profile}] section in {settings.credentials_file}"
        )
    section = parser[settings.profile]
    out = {}
    for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        if section.get(key):
            out[key] = section[key].strip()
    if "aws_access_key_id" not in out or "aws_secret_access_key" not in out:
        raise OffsiteError(
            f"credentials_file: [{settings.profile}] needs aws_access_key_id and "
            "aws_secret_access_key"
        )
    return out
