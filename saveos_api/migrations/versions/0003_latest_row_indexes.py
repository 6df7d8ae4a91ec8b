"""latest-row indexes: (agent_id, finished_at, id) for snapshots, checks and drills

The fleet status asks, per agent, for the row with the greatest (finished_at, id). With `id` in
the index a backward index scan returns that row first, without sorting an agent's rows that
share a finished_at; the old (agent_id, finished_at) indexes are a prefix of the new ones.

Revision ID: 0003
Revises: 0002_offsite
Create Date: 2026-11-25 16:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002_offsite"
branch_labels = None
depends_on = None

TABLES = ("snapshots", "check_results", "drill_results")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_agent_finished_id", table, ["agent_id", "finished_at", "id"])
        op.drop_index(f"ix_{table}_agent_finished", table_name=table)


def downgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_agent_finished", table, ["agent_id", "finished_at"])
        op.drop_index(f"ix_{table}_agent_finished_id", table_name=table)
