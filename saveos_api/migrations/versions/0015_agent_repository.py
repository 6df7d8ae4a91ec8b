"""Glossary names in the schema (#18): agents.repository_*

A rename only; every value stays. agents.repo_server, repo_path, repo_quota_bytes,
repo_used_bytes and repo_reported_at (0005: where the agent's repository lives, as its newest
snapshot report said) take the glossary's word, as 0013 and 0014 named snapshots.repository
and check_results.repository; the API answers with both keys for a while. No trigger or index
names these columns, so nothing is made again; SQLite renames a column in place (ALTER TABLE
... RENAME COLUMN, as 0013 did on agents), so the table is not copied.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 05:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

SUFFIXES = ("server", "path", "quota_bytes", "used_bytes", "reported_at")


def upgrade() -> None:
    for suffix in SUFFIXES:
        op.alter_column("agents", f"repo_{suffix}", new_column_name=f"repository_{suffix}")


def downgrade() -> None:
    for suffix in SUFFIXES:
        op.alter_column("agents", f"repository_{suffix}", new_column_name=f"repo_{suffix}")
