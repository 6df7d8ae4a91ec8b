"""agents: the verification schedule (check, drill, escrow proof: interval and grace)

A check, drill or escrow proof older than its interval makes the agent late, past interval +
grace overdue (saveos_api/status.py); null or 0 expects none. Provisioned by the role from
saveos_agent_check_*, saveos_agent_drill_* and saveos_agent_escrow_proof_*.

Revision ID: 0008
Revises: 0011
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = (
    "check_interval_s",
    "check_grace_s",
    "drill_interval_s",
    "drill_grace_s",
    "escrow_interval_s",
    "escrow_grace_s",
)


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
