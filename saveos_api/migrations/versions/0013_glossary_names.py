"""Glossary names in the schema (#18): snapshots.repository, agents.last_heartbeat_at,
agent_latest.snapshot_* / last_successful_*

Renames only; every value stays. snapshots.repo is the report's repository (the API takes
`repo` or `repository.url` for one release and answers with both keys); agents.last_seen is
the instant of the latest heartbeat (the API's `last_heartbeat`); agent_latest's `snap_*`
columns hold the latest snapshot, its `good_*` ones the latest successful backup. The
trigger on snapshots names agent_latest's columns, so it is made again under the new names
(PostgreSQL's plpgsql body is text a rename does not touch).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 19:00:00
"""

from __future__ import annotations

from alembic import op

from saveos_api.migrations import latest_triggers

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Frozen: the snapshots trigger's groups before (0004) and after this revision.
SUCCESSFUL = "{row}.exit_status IN ('ok', 'warning')"
KEPT = ("archive", "original_size", "deduplicated_size")
OLD_GROUPS = (("snap", None, ("exit_status", "locked")), ("good", SUCCESSFUL, KEPT))
NEW_GROUPS = (("snapshot", None, ("exit_status", "locked")), ("last_successful", SUCCESSFUL, KEPT))
SUFFIXES = {
    "snap": ("id", "finished_at", "exit_status", "locked"),
    "good": ("id", "finished_at", *KEPT),
}
PREFIXES = {"snap": "snapshot", "good": "last_successful"}
# table -> (old name, new name)
RENAMES = [
    ("snapshots", "repo", "repository"),
    ("agents", "last_seen", "last_heartbeat_at"),
    *(
        ("agent_latest", f"{old}_{suffix}", f"{PREFIXES[old]}_{suffix}")
        for old, suffixes in SUFFIXES.items()
        for suffix in suffixes
    ),
]


def _rename(backwards: bool) -> None:
    dialect = op.get_bind().dialect.name
    # Dropped first, so no rename has to rewrite (SQLite) or keep (PostgreSQL) its body.
    for statement in latest_triggers.drop("snapshots", dialect):
        op.execute(statement)
    for table, old, new in RENAMES:
        before, after = (new, old) if backwards else (old, new)
        op.alter_column(table, before, new_column_name=after)
    groups = OLD_GROUPS if backwards else NEW_GROUPS
    for statement in latest_triggers.create("snapshots", groups, dialect):
        op.execute(statement)


def upgrade() -> None:
    _rename(backwards=False)


def downgrade() -> None:
    _rename(backwards=True)
