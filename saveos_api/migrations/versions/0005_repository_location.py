"""agents.repo_*: where each agent's repository lives (server, path, quota, bytes used)

Reported by the agent with each snapshot; the repository server is null for a repository on
the host's own disk.

Revision ID: 0005
Revises: 0007
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen copies of the model types: migrations must not change when models.py does.
TS = sa.DateTime(timezone=True)

revision = "0005"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = (
    ("repo_server", sa.String(length=253)),
    ("repo_path", sa.String(length=1024)),
    ("repo_quota_bytes", sa.BigInteger()),
    ("repo_used_bytes", sa.BigInteger()),
    ("repo_reported_at", TS),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("agents", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        for name, _type in reversed(COLUMNS):
            batch.drop_column(name)
