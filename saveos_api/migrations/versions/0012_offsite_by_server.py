"""agents.offsite_server: the repository server that makes the agent's offsite copy

Null: the host makes its own copy (a repository on its own disk), as before. Set by the
controller's first report of a copy the server made (`saveos prune`); from then on the agent's
own offsite reports are refused: a host that holds no S3 credentials cannot vouch for a copy.

Revision ID: 0012
Revises: 0005
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("offsite_server", sa.String(length=253), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("offsite_server")
