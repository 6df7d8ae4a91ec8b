"""Glossary names in the schema (#18): check_results.repository

A rename only; every value stays. check_results.repo is the checked repository's URL (the API
takes the check report's `repo` or `repository.url` for one release), named as 0013 named
snapshots.repository. No trigger names the column (check_results' keeps agent_latest's
check_* from id, finished_at and result), so none is made again.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 23:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("check_results", "repo", new_column_name="repository")


def downgrade() -> None:
    op.alter_column("check_results", "repository", new_column_name="repo")
