"""agent_latest: each agent's latest report of every kind, kept by triggers; snapshots.locked

The fleet status probed five history tables per agent (about eight index scans each); at
10,000 agents that was most of its time. Triggers on every report table keep one row per agent
with the latest (greatest finished_at, then id) row of each kind, so a writer that bypasses the
API (a bulk load, an operator's script) keeps it right too. The same statements serve both
dialects: PostgreSQL runs them in a plpgsql function, SQLite in the trigger body.

snapshots.locked: the backup failed because the repository stayed locked (status `locked`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from saveos_api.migrations import latest_triggers

# Frozen copies of the model types: migrations must not change when models.py does.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# source table -> (group, condition on the source row `{row}`, copied columns)
GROUPS: dict[str, tuple[latest_triggers.Group, ...]] = {
    "snapshots": (
        ("snap", None, ("exit_status", "locked")),
        (
            "good",
            "{row}.exit_status IN ('ok', 'warning')",
            ("archive", "original_size", "deduplicated_size"),
        ),
    ),
    "check_results": (("check", None, ("result",)),),
    "drill_results": (("drill", None, ("result",)),),
    "offsite_syncs": (("offsite", None, ("result",)), ("offsite_ok", "{row}.result = 'ok'", ())),
    "escrow_proofs": (("escrow", None, ("result",)), ("escrow_ok", "{row}.result = 'ok'", ())),
}
COLUMN_TYPES = {
    "exit_status": sa.String(16),
    "locked": sa.Boolean(),
    "result": sa.String(16),
    "archive": sa.String(255),
    "original_size": sa.BigInteger(),
    "deduplicated_size": sa.BigInteger(),
}


def _backfill(table: str, group: str, condition: str | None, columns: tuple[str, ...]) -> str:
    targets = ", ".join([f"{group}_id", f"{group}_finished_at"] + [f"{group}_{c}" for c in columns])
    picked = ", ".join(["r.id", "r.finished_at"] + [f"r.{c}" for c in columns])
    where = " AND ".join(
        ["r.agent_id = agent_latest.agent_id"] + ([condition.format(row="r")] if condition else [])
    )
    return (
        f"UPDATE agent_latest SET ({targets}) = (SELECT {picked} FROM {table} r WHERE {where}"  # noqa: S608
        " ORDER BY r.finished_at DESC, r.id DESC LIMIT 1)"
    )


def upgrade() -> None:
    op.add_column(
        "snapshots",
        sa.Column("locked", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    columns = [sa.Column("agent_id", ID, nullable=False)]
    for groups in GROUPS.values():
        for group, _condition, copied in groups:
            columns += [
                sa.Column(f"{group}_id", sa.BigInteger(), nullable=True),
                sa.Column(f"{group}_finished_at", TS, nullable=True),
                *(sa.Column(f"{group}_{c}", COLUMN_TYPES[c], nullable=True) for c in copied),
            ]
    op.create_table(
        "agent_latest",
        *columns,
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id"),
    )
    dialect = op.get_bind().dialect.name
    for table, groups in GROUPS.items():
        for statement in latest_triggers.create(table, groups, dialect):
            op.execute(statement)
    # Rows reported before this revision; the triggers take every one after it.
    op.execute("INSERT INTO agent_latest (agent_id) SELECT id FROM agents")
    for table, groups in GROUPS.items():
        for group in groups:
            op.execute(_backfill(table, *group))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in GROUPS:
        for statement in latest_triggers.drop(table, dialect):
            op.execute(statement)
    op.drop_table("agent_latest")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("locked")
