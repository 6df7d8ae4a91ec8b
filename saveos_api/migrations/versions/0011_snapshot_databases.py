"""snapshots.databases, drill_results.databases: the database dumps an archive holds

Each snapshot records the dumps streamed into its archive ([{name, type, format, size, status,
message}]) and each drill the databases it restored into a scratch database ([{name, type,
result, message}]); NULL for reports without databases (and from older agents).

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both dialects: a batch (copy-and-move) table on SQLite would lose the
# agent_latest triggers of 0004.
def upgrade() -> None:
    for table in ("snapshots", "drill_results"):
        op.add_column(table, sa.Column("databases", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("drill_results", "snapshots"):
        op.drop_column(table, "databases")
