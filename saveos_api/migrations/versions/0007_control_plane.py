"""control plane: scoped API tokens, the audit log, the provisioned schedule, report bounds

api_tokens: operators' tokens (read < operate < admin), stored as HMAC like agent tokens; the
admin token of `saveos server init` is entered as the first admin token when the server starts.
audit_events: every state-changing call of an operator's token (who, what, when).
agents.provisioned_* / declared_*: the schedule the role provisioned is authoritative; what an
agent declares in its heartbeats is kept beside it (it can only make the effective values
stricter). Existing agents keep their current values as the provisioned ones.
ix_*_agent_received: the per-agent bound on reports received in a day counts with an index.

Revision ID: 0007
Revises: 0008
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen copies of the model types: migrations must not change when models.py does.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None

REPORT_TABLES = ("snapshots", "check_results", "drill_results", "offsite_syncs")
SCHEDULE = ("backup_interval_s", "heartbeat_interval_s")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    with op.batch_alter_table("agents") as batch:
        for field in SCHEDULE:
            batch.add_column(sa.Column(f"provisioned_{field}", sa.Integer(), nullable=True))
            batch.add_column(sa.Column(f"declared_{field}", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE agents SET provisioned_backup_interval_s = backup_interval_s, "
        "provisioned_heartbeat_interval_s = heartbeat_interval_s"
    )
    for table in REPORT_TABLES:
        op.create_index(f"ix_{table}_agent_received", table, ["agent_id", "received_at"])


def downgrade() -> None:
    for table in REPORT_TABLES:
        op.drop_index(f"ix_{table}_agent_received", table_name=table)
    with op.batch_alter_table("agents") as batch:
        for field in SCHEDULE:
            batch.drop_column(f"declared_{field}")
            batch.drop_column(f"provisioned_{field}")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("api_tokens")
