"""SQLAlchemy 2 models. Alembic migrations in saveos_api/migrations own the real schema.

Over 400 lines on purpose: one class per table, the whole schema in one file, read side by side
with the migrations that make it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import saveos_rules as rules
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(sa.types.TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite too (which stores naive text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value if value.tzinfo is UTC else value.astimezone(UTC)


utcnow = rules.utcnow


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON(), list[str]: sa.JSON()}


def _bigint_pk() -> Any:
    return mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)


def _agent_fk() -> Any:
    return mapped_column(sa.ForeignKey("agents.id", ondelete="CASCADE"))


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = _bigint_pk()
    name: Mapped[str] = mapped_column(sa.String(253), unique=True)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    agent_version: Mapped[str | None] = mapped_column(sa.String(64))
    borg_version: Mapped[str | None] = mapped_column(sa.String(64))
    os: Mapped[str | None] = mapped_column(sa.String(200))
    hostname: Mapped[str | None] = mapped_column(sa.String(253))
    facts: Mapped[dict[str, Any] | None] = mapped_column()
    backup_interval_s: Mapped[int] = mapped_column(sa.Integer)
    backup_grace_s: Mapped[int] = mapped_column(sa.Integer)
    heartbeat_interval_s: Mapped[int] = mapped_column(sa.Integer)
    # The schedule is the provisioned one (role -> API); an agent's heartbeat may only make
    # the effective values above stricter (shorter). What it declared is kept to show a mismatch.
    provisioned_backup_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    provisioned_heartbeat_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    declared_backup_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    declared_heartbeat_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()
    heartbeat_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    decommissioned_at: Mapped[datetime | None] = mapped_column()
    # Declared by an agent that keeps an offsite copy; null: no offsite copy expected.
    offsite_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    # The repository server that makes the offsite copy (null: the host makes its own); set
    # by the controller's reports, after which the agent's own offsite reports are refused.
    offsite_server: Mapped[str | None] = mapped_column(sa.String(253))
    # A central run found the repository tampered with; cleared by a rollback or clean run.
    tampered_at: Mapped[datetime | None] = mapped_column()
    # The verification schedule it was provisioned with (null or 0: none expected; 0008).
    check_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    check_grace_s: Mapped[int | None] = mapped_column(sa.Integer)
    drill_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    drill_grace_s: Mapped[int | None] = mapped_column(sa.Integer)
    escrow_interval_s: Mapped[int | None] = mapped_column(sa.Integer)
    escrow_grace_s: Mapped[int | None] = mapped_column(sa.Integer)
    # Where the agent's repository lives, as its last snapshot report said: the repository
    # server (null: on the host itself), the path there, the storage quota and the bytes used.
    repository_server: Mapped[str | None] = mapped_column(sa.String(253))
    repository_path: Mapped[str | None] = mapped_column(sa.String(1024))
    repository_quota_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    repository_used_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    repository_reported_at: Mapped[datetime | None] = mapped_column()


class AgentToken(Base):
    __tablename__ = "agent_tokens"

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    # HMAC-SHA256 hex of the token: the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Heartbeat(Base):
    __tablename__ = "heartbeats"
    __table_args__ = (sa.Index("ix_heartbeats_agent_received", "agent_id", "received_at"),)

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    received_at: Mapped[datetime] = mapped_column()
    agent_version: Mapped[str | None] = mapped_column(sa.String(64))
    borg_version: Mapped[str | None] = mapped_column(sa.String(64))
    os: Mapped[str | None] = mapped_column(sa.String(200))
    facts: Mapped[dict[str, Any] | None] = mapped_column()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (sa.Index("ix_jobs_agent_state", "agent_id", "state"),)

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    kind: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_by: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    result: Mapped[dict[str, Any] | None] = mapped_column()
    # The report that finished the job: a replay of it is a no-op, another one is a conflict.
    result_report_id: Mapped[str | None] = mapped_column(sa.String(64))


class Snapshot(Base):
    __tablename__ = "snapshots"
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "report_id", name="uq_snapshots_agent_report"),
        sa.Index("ix_snapshots_agent_finished_id", "agent_id", "finished_at", "id"),
        sa.Index("ix_snapshots_agent_received", "agent_id", "received_at"),
    )

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    report_id: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    repository: Mapped[str] = mapped_column(sa.String(1024))  # `repo` before 0013
    archive: Mapped[str] = mapped_column(sa.String(255))
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    nfiles: Mapped[int] = mapped_column(sa.BigInteger)
    original_size: Mapped[int] = mapped_column(sa.BigInteger)
    compressed_size: Mapped[int] = mapped_column(sa.BigInteger)
    deduplicated_size: Mapped[int] = mapped_column(sa.BigInteger)
    exit_status: Mapped[str] = mapped_column(sa.String(16))
    # Failed because the repository stayed locked (the status says `locked`, not `failing`).
    locked: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    rc: Mapped[int] = mapped_column(sa.Integer)
    warnings: Mapped[list[str]] = mapped_column(default=list)
    message: Mapped[str | None] = mapped_column(sa.Text)
    # Database dumps in the archive: [{name, type, format, size, status, message}] (0011).
    databases: Mapped[list[Any] | None] = mapped_column(sa.JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The central prune removed this archive from the repository.
    pruned_at: Mapped[datetime | None] = mapped_column()


class CheckResult(Base):
    __tablename__ = "check_results"
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "report_id", name="uq_check_results_agent_report"),
        sa.Index("ix_check_results_agent_finished_id", "agent_id", "finished_at", "id"),
        sa.Index("ix_check_results_agent_received", "agent_id", "received_at"),
    )

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    report_id: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    repository: Mapped[str] = mapped_column(sa.String(1024))  # `repo` before 0014
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    verify_data: Mapped[bool] = mapped_column(sa.Boolean)
    result: Mapped[str] = mapped_column(sa.String(16))
    rc: Mapped[int] = mapped_column(sa.Integer)
    message: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class DrillResult(Base):
    __tablename__ = "drill_results"
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "report_id", name="uq_drill_results_agent_report"),
        sa.Index("ix_drill_results_agent_finished_id", "agent_id", "finished_at", "id"),
        sa.Index("ix_drill_results_agent_received", "agent_id", "received_at"),
    )

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    report_id: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    archive: Mapped[str] = mapped_column(sa.String(255))
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    files_checked: Mapped[int] = mapped_column(sa.BigInteger)
    files_matched: Mapped[int] = mapped_column(sa.BigInteger)
    files_mismatched: Mapped[int] = mapped_column(sa.BigInteger)
    result: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str | None] = mapped_column(sa.Text)
    # Databases restored into a scratch database: [{name, type, result, message}] (0011).
    databases: Mapped[list[Any] | None] = mapped_column(sa.JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class OffsiteSync(Base):
    __tablename__ = "offsite_syncs"
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "report_id", name="uq_offsite_syncs_agent_report"),
        sa.Index("ix_offsite_syncs_agent_finished", "agent_id", "finished_at"),
        sa.Index("ix_offsite_syncs_agent_received", "agent_id", "received_at"),
    )

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    report_id: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    target: Mapped[str | None] = mapped_column(sa.String(1024))
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    objects: Mapped[int] = mapped_column(sa.BigInteger)
    objects_uploaded: Mapped[int] = mapped_column(sa.BigInteger)
    bytes_uploaded: Mapped[int] = mapped_column(sa.BigInteger)
    objects_deleted: Mapped[int] = mapped_column(sa.BigInteger)
    result: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class EscrowProof(Base):
    """The controller opened the host's repository with the escrowed passphrase and key."""

    __tablename__ = "escrow_proofs"
    __table_args__ = (sa.Index("ix_escrow_proofs_agent_finished", "agent_id", "finished_at"),)

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    method: Mapped[str] = mapped_column(sa.String(16))
    result: Mapped[str] = mapped_column(sa.String(16))
    archives: Mapped[int | None] = mapped_column(sa.BigInteger)
    message: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class RepoMaintenance(Base):
    """One central run on a host's repository from the controller (prune or rollback)."""

    __tablename__ = "repo_maintenance"
    __table_args__ = (sa.Index("ix_repo_maintenance_agent_finished", "agent_id", "finished_at"),)

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    kind: Mapped[str] = mapped_column(sa.String(16))  # prune | rollback
    result: Mapped[str] = mapped_column(sa.String(16))  # ok | tampered | error
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    verify_data: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    transaction_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    archives: Mapped[int | None] = mapped_column(sa.BigInteger)
    pruned: Mapped[list[str]] = mapped_column(default=list)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list)
    # What the next central run holds the repository to (saveos_cli/retention/verify.py).
    state: Mapped[dict[str, Any] | None] = mapped_column()
    message: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentLatest(Base):
    """Each agent's latest report of every kind, kept by database triggers on every insert.

    The fleet status reads one row per agent here instead of probing five history tables per
    agent. Written only by the triggers of migration 0004 (so a bulk load or a writer that
    bypasses the API keeps it right too); "latest" is the greatest (finished_at, id), as in the
    probes (saveos_api/fleet.py), which still answer for instants before an agent's latest row.
    """

    __tablename__ = "agent_latest"

    agent_id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("agents.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    snapshot_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    snapshot_finished_at: Mapped[datetime | None] = mapped_column()
    snapshot_exit_status: Mapped[str | None] = mapped_column(sa.String(16))
    snapshot_locked: Mapped[bool | None] = mapped_column(sa.Boolean)
    last_successful_id: Mapped[int | None] = mapped_column(sa.BigInteger)  # ok/warning
    last_successful_finished_at: Mapped[datetime | None] = mapped_column()
    last_successful_archive: Mapped[str | None] = mapped_column(sa.String(255))
    last_successful_original_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_successful_deduplicated_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    check_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    check_finished_at: Mapped[datetime | None] = mapped_column()
    check_result: Mapped[str | None] = mapped_column(sa.String(16))
    drill_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    drill_finished_at: Mapped[datetime | None] = mapped_column()
    drill_result: Mapped[str | None] = mapped_column(sa.String(16))
    offsite_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    offsite_finished_at: Mapped[datetime | None] = mapped_column()
    offsite_result: Mapped[str | None] = mapped_column(sa.String(16))
    offsite_ok_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    offsite_ok_finished_at: Mapped[datetime | None] = mapped_column()
    escrow_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    escrow_finished_at: Mapped[datetime | None] = mapped_column()
    escrow_result: Mapped[str | None] = mapped_column(sa.String(16))
    escrow_ok_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    escrow_ok_finished_at: Mapped[datetime | None] = mapped_column()


class ApiToken(Base):
    """An operator's token with a scope (read < operate < admin); only its HMAC is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = _bigint_pk()
    name: Mapped[str] = mapped_column(sa.String(200))
    scope: Mapped[str] = mapped_column(sa.String(16))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who made it: another token's id (None for the admin token of `saveos server init`).
    created_by: Mapped[int | None] = mapped_column(sa.BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """One state-changing call by an operator's token: who (token id), what, when."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = _bigint_pk()
    at: Mapped[datetime] = mapped_column(default=utcnow)
    token_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str | None] = mapped_column(sa.String(300))
    client: Mapped[str | None] = mapped_column(sa.String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column()


class WebSession(Base):
    """A dashboard login: a token exchanged for a cookie whose HMAC alone is kept here."""

    __tablename__ = "web_sessions"
    __table_args__ = (sa.Index("ix_web_sessions_expires", "expires_at"),)

    id: Mapped[int] = _bigint_pk()
    session_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    principal: Mapped[str] = mapped_column(sa.String(200))
    scope: Mapped[str] = mapped_column(sa.String(16))
    token_ref: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


# ---- alerts (saveos_api/alerts; migration 0009) ----


class AlertState(Base):
    """The status each agent was last seen in by the alert evaluator; a flip changes it.

    Changed only by a conditional `UPDATE ... WHERE status = <old>`, so of several workers that
    see the same change exactly one writes the flip.
    """

    __tablename__ = "alert_states"

    agent_id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("agents.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    status: Mapped[str] = mapped_column(sa.String(16))
    since: Mapped[datetime] = mapped_column()  # the reason is the latest flip's
    # Last notice about this status (the flip's, then each repeat's).
    notified_at: Mapped[datetime | None] = mapped_column()


class Flip(Base):
    """One change of an agent's status: from (null: first seen), to, when and why."""

    __tablename__ = "flips"
    __table_args__ = (
        sa.Index("ix_flips_agent_at", "agent_id", "at"),
        sa.Index("ix_flips_at", "at"),
    )

    id: Mapped[int] = _bigint_pk()
    agent_id: Mapped[int] = _agent_fk()
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    at: Mapped[datetime] = mapped_column()
    reason: Mapped[str | None] = mapped_column(sa.Text)


class AlertChannel(Base):
    """An Apprise URL to notify, encrypted at rest (Fernet, key derived from the server secret)."""

    __tablename__ = "alert_channels"

    id: Mapped[int] = _bigint_pk()
    name: Mapped[str | None] = mapped_column(sa.String(100))
    url_encrypted: Mapped[str] = mapped_column(sa.Text)
    # HMAC-SHA256 of the URL: finds the same URL again without decrypting every row.
    url_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    url_redacted: Mapped[str] = mapped_column(sa.String(300))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    min_status: Mapped[str] = mapped_column(sa.String(16))
    digest: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # The digest period last handled (sent, or skipped at the channel's first period).
    digest_period: Mapped[int | None] = mapped_column(sa.BigInteger)
    source: Mapped[str] = mapped_column(sa.String(16))  # "api" | "settings"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column()


class AlertDelivery(Base):
    """The outbox: one message for one channel, sent by the delivery worker with retries."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("channel_id", "dedupe_key", name="uq_alert_deliveries_channel_key"),
        sa.Index("ix_alert_deliveries_state_next", "state", "next_attempt_at"),
        sa.Index("ix_alert_deliveries_created", "created_at"),
    )

    id: Mapped[int] = _bigint_pk()
    channel_id: Mapped[int] = mapped_column(
        sa.ForeignKey("alert_channels.id", ondelete="CASCADE"), index=True
    )
    flip_id: Mapped[int | None] = mapped_column(sa.ForeignKey("flips.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(sa.String(16))  # flip|recovery|repeat|summary|digest|test
    dedupe_key: Mapped[str] = mapped_column(sa.String(200))
    notify_type: Mapped[str] = mapped_column(sa.String(16))  # Apprise: info|success|warning|failure
    title: Mapped[str] = mapped_column(sa.String(250))
    body: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(
        sa.String(16), default="pending"
    )  # pending|sending|sent|dead
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.Text)
