"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 15:25:15.771840
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen copies of the model types: migrations must not change when models.py does.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("borg_version", sa.String(length=64), nullable=True),
        sa.Column("os", sa.String(length=200), nullable=True),
        sa.Column("hostname", sa.String(length=253), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("backup_interval_s", sa.Integer(), nullable=False),
        sa.Column("backup_grace_s", sa.Integer(), nullable=False),
        sa.Column("heartbeat_interval_s", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=True),
        sa.Column("heartbeat_count", sa.BigInteger(), nullable=False),
        sa.Column("decommissioned_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "agent_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_agent_tokens_agent_id", "agent_tokens", ["agent_id"])

    op.create_table(
        "heartbeats",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("borg_version", sa.String(length=64), nullable=True),
        sa.Column("os", sa.String(length=200), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_heartbeats_agent_received", "heartbeats", ["agent_id", "received_at"])

    op.create_table(
        "jobs",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("result_report_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_agent_state", "jobs", ["agent_id", "state"])

    op.create_table(
        "check_results",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("repo", sa.String(length=1024), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("verify_data", sa.Boolean(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("rc", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "report_id", name="uq_check_results_agent_report"),
    )
    op.create_index("ix_check_results_agent_finished", "check_results", ["agent_id", "finished_at"])

    op.create_table(
        "drill_results",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("archive", sa.String(length=255), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("files_checked", sa.BigInteger(), nullable=False),
        sa.Column("files_matched", sa.BigInteger(), nullable=False),
        sa.Column("files_mismatched", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "report_id", name="uq_drill_results_agent_report"),
    )
    op.create_index("ix_drill_results_agent_finished", "drill_results", ["agent_id", "finished_at"])

    op.create_table(
        "snapshots",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("repo", sa.String(length=1024), nullable=False),
        sa.Column("archive", sa.String(length=255), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("nfiles", sa.BigInteger(), nullable=False),
        sa.Column("original_size", sa.BigInteger(), nullable=False),
        sa.Column("compressed_size", sa.BigInteger(), nullable=False),
        sa.Column("deduplicated_size", sa.BigInteger(), nullable=False),
        sa.Column("exit_status", sa.String(length=16), nullable=False),
        sa.Column("rc", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "report_id", name="uq_snapshots_agent_report"),
    )
    op.create_index("ix_snapshots_agent_finished", "snapshots", ["agent_id", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_snapshots_agent_finished", table_name="snapshots")
    op.drop_table("snapshots")
    op.drop_index("ix_drill_results_agent_finished", table_name="drill_results")
    op.drop_table("drill_results")
    op.drop_index("ix_check_results_agent_finished", table_name="check_results")
    op.drop_table("check_results")
    op.drop_index("ix_jobs_agent_state", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_heartbeats_agent_received", table_name="heartbeats")
    op.drop_table("heartbeats")
    op.drop_index("ix_agent_tokens_agent_id", table_name="agent_tokens")
    op.drop_table("agent_tokens")
    op.drop_table("agents")
