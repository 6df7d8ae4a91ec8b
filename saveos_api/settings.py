"""Server settings from the environment (prefix SAVEOS_), plus the secrets they point at."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

import saveos_rules as rules
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN_LEN = 24
# Tokens people paste from examples; refusing them beats running an open server.
PLACEHOLDERS = ("changeme", "change-me", "change_me", "secret", "password", "admin", "token", "xxx")


class ConfigError(Exception):
    """The server cannot start with this configuration; the message says what to fix."""


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "saveos"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAVEOS_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    heartbeat_interval_s: int = Field(
        rules.DEFAULT_HEARTBEAT_INTERVAL_S,
        ge=rules.HEARTBEAT_INTERVAL_MIN_S,
        le=rules.INTERVAL_MAX_S,
    )
    backup_interval_s: int = Field(
        rules.DEFAULT_BACKUP_INTERVAL_S, ge=rules.BACKUP_INTERVAL_MIN_S, le=rules.INTERVAL_MAX_S
    )
    backup_grace_s: int = Field(3600, ge=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    heartbeat_history: int = Field(100, ge=1)
    # A job not finished this long after it was queued is marked expired (never handed out later).
    job_timeout_s: int = Field(86400, ge=1)
    db_pool_size: int = Field(8, ge=1)
    # Seconds a scrape of /metrics reuses the fleet query of the one before.
    metrics_cache_s: float = Field(15.0, ge=0)
    # Reports (snapshots, checks, drills, offsite) one agent may send: report_burst in any
    # window of report_burst / report_rate_per_min minutes, and at most reports_per_day of each
    # kind stored (both counted in the database: they hold across workers and instances).
    report_burst: int = Field(60, ge=1)
    report_rate_per_min: float = Field(30.0, gt=0)
    reports_per_day: int = Field(2000, ge=1)
    # How long a dashboard login lasts (the session cookie and its row expire together).
    web_session_ttl_s: int = Field(8 * 3600, ge=60, le=30 * 86400)
    # Alerts (saveos_api/alerts): see README "Alerts" for what each one does.
    alerts_enabled: bool = True
    alert_evaluate_s: float = Field(10.0, gt=0)
    alert_outbox_s: float = Field(5.0, gt=0)
    alert_retry_base_s: float = Field(30.0, gt=0)
    alert_retry_max_s: float = Field(900.0, gt=0)
    alert_give_up_s: float = Field(3 * 86400.0, gt=0)
    alert_send_timeout_s: float = Field(30.0, gt=0)
    alert_repeat_s: float = Field(86400.0, ge=0)  # 0: never repeat
    alert_burst: int = Field(10, ge=1)
    alert_digest_period_s: int = Field(86400, ge=1)
    alert_digest_offset_s: int = Field(8 * 3600, ge=0)
    # Channels declared here (JSON list of URLs or {url, name, labels, min_status, digest});
    # the file form keeps the URLs out of the environment (0600, JSON or one URL a line).
    alert_channels: SecretStr | None = None
    alert_channels_file: Path | None = None
    dashboard_url: str | None = None
    deadman_url: SecretStr | None = None
    deadman_interval_s: float = Field(60.0, gt=0)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'saveos.db'}"

    @property
    def effective_admin_token_file(self) -> Path:
        return self.admin_token_file or self.data_dir / "admin.token"

    @property
    def effective_secret_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    @cached_property
    def admin_token_value(self) -> str:
        """The admin bearer token, validated; raises ConfigError when unusable."""
        if self.admin_token is not None:
            token, origin = self.admin_token.get_secret_value().strip(), "SAVEOS_ADMIN_TOKEN"
        else:
            path = self.effective_admin_token_file
            if not path.exists():
                raise ConfigError(
                    f"no admin token: set SAVEOS_ADMIN_TOKEN or create {path} "
                    "(`saveos server init` does)"
                )
            token, origin = read_private(path).strip(), str(path)
        check_admin_token(token, origin)
        return token

    @cached_property
    def secret_key_bytes(self) -> bytes:
        """The HMAC key for agent tokens; generated (0600) in the data dir on first use."""
        if self.secret_key is not None:
            key = self.secret_key.get_secret_value().strip()
            origin = "SAVEOS_SECRET_KEY"
        else:
            path = self.effective_secret_key_file
            if not path.exists() and self.secret_key_file is None:
                write_private(path, secrets.token_urlsafe(48) + "\n")
            if not path.exists():
                raise ConfigError(f"secret key file {path} does not exist")
            key, origin = read_private(path).strip(), str(path)
        if len(key) < 32:
            raise ConfigError(f"secret key from {origin} is shorter than 32 characters")
        return key.encode()

    def validate_secrets(self) -> None:
        """Fail early (before serving) on a missing or weak admin token or secret."""
        _ = self.admin_token_value
        _ = self.secret_key_bytes


def check_admin_token(token: str, origin: str) -> None:
    if not token:
        raise ConfigError(f"admin token from {origin} is empty")
    if token.lower() in PLACEHOLDERS or "changeme" in token.lower().replace("-", "").replace(
        "_", ""
    ):
        raise ConfigError(f"admin token from {origin} is a placeholder; generate a real one")
    if len(token) < MIN_ADMIN_TOKEN_LEN:
        raise ConfigError(
            f"admin token from {origin} is shorter than {MIN_ADMIN_TOKEN_LEN} characters"
        )


def read_private(path: Path) -> str:
    """A private file's text, or ConfigError saying why not (saveos_rules.read_private)."""
    return rules.read_private(str(path), ConfigError)


def write_private(path: Path, content: str) -> None:
    """Create a file readable only by its owner without a window where it is wider."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
