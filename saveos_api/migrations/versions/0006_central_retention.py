"""central retention: repo_maintenance, snapshots.pruned_at, agents.tampered_at

repo_maintenance: one row per central run on a host's repository (prune or rollback) with what
it found, what it pruned and the state the next run holds the repository to.
snapshots.pruned_at: the central prune removed that archive (`saveos snapshots` hides it).
agents.tampered_at: a central run found the repository tampered with (status `tampered`) and no
rollback or clean run has been recorded since.

Revision ID: 0006
Revises: 0010
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen copies of the model types: migrations must not change when models.py does.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0006"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN: a batch copy of snapshots on SQLite would drop 0004's triggers
    op.add_column("agents", sa.Column("tampered_at", TS, nullable=True))
    op.add_column("snapshots", sa.Column("pruned_at", TS, nullable=True))
    op.create_table(
        "repo_maintenance",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("verify_data", sa.Boolean(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("archives", sa.BigInteger(), nullable=True),
        sa.Column("pruned", sa.JSON(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_repo_maintenance_agent_finished", "repo_maintenance", ["agent_id", "finished_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_repo_maintenance_agent_finished", table_name="repo_maintenance")
    op.drop_table("repo_maintenance")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("pruned_at")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("tampered_at")
