"""web sessions: the dashboard's login sessions (a token exchanged for a session cookie)

Only the HMAC of the cookie's value is stored, so a copy of the database does not log anyone
in; logout and expiry are conditional columns, checked on every request.

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-01 08:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0010"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", ID, nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False),
        # Who logged in and with what rights: the token's name and scope at login time.
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        # What the login token was (e.g. an operator token's id), so revoking it ends the session.
        sa.Column("token_ref", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_hash"),
    )
    op.create_index("ix_web_sessions_expires", "web_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_expires", table_name="web_sessions")
    op.drop_table("web_sessions")
