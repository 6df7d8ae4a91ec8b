"""offsite syncs, escrow proofs, agents.offsite_interval_s

Revision ID: 0002_offsite
Revises: 0001
Create Date: 2026-11-25 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen copies of the model types: migrations must not change when models.py does.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0002_offsite"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("offsite_interval_s", sa.Integer(), nullable=True))
    op.create_table(
        "offsite_syncs",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("target", sa.String(length=1024), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.Column("objects_uploaded", sa.BigInteger(), nullable=False),
        sa.Column("bytes_uploaded", sa.BigInteger(), nullable=False),
        sa.Column("objects_deleted", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "report_id", name="uq_offsite_syncs_agent_report"),
    )
    op.create_index("ix_offsite_syncs_agent_finished", "offsite_syncs", ["agent_id", "finished_at"])
    op.create_table(
        "escrow_proofs",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("archives", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_escrow_proofs_agent_finished", "escrow_proofs", ["agent_id", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_escrow_proofs_agent_finished", table_name="escrow_proofs")
    op.drop_table("escrow_proofs")
    op.drop_index("ix_offsite_syncs_agent_finished", table_name="offsite_syncs")
    op.drop_table("offsite_syncs")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("offsite_interval_s")
