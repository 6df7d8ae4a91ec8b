"""Migration 0013 renames columns to the glossary's words (#18): a database at 0012 with rows
keeps every value under the new names, the agent_latest trigger keeps working under them, and
a downgrade brings the old names (and a working trigger) back; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command

from saveos_api import migrations
from saveos_api.db import make_engine
from saveos_api.models import UTCDateTime

TS, INT, TEXT = UTCDateTime(), sa.BigInteger(), sa.String()

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# agent_latest's snapshot columns: (before 0013, from 0013)
LATEST = [
    ("snap_id", "snapshot_id"),
    ("snap_finished_at", "snapshot_finished_at"),
    ("snap_exit_status", "snapshot_exit_status"),
    ("snap_locked", "snapshot_locked"),
    ("good_id", "last_successful_id"),
    ("good_finished_at", "last_successful_finished_at"),
    ("good_archive", "last_successful_archive"),
    ("good_original_size", "last_successful_original_size"),
    ("good_deduplicated_size", "last_successful_deduplicated_size"),
]
OLD = [old for old, _ in LATEST]
NEW = [new for _, new in LATEST]


def _table(table: str, /, **types) -> sa.TableClause:
    return sa.table(table, *(sa.column(column, type_) for column, type_ in types.items()))


def _agent(conn, seen_column: str) -> None:
    columns = dict.fromkeys(("backup_interval_s", "backup_grace_s", "heartbeat_interval_s"), INT)
    table = _table(
        "agents", name=TEXT, labels=sa.JSON(), created_at=TS, heartbeat_count=INT, **columns,
        **{seen_column: TS},
    )  # fmt: skip
    values = dict(name="web1", labels={}, created_at=NOW, heartbeat_count=3, **{seen_column: NOW})
    conn.execute(sa.insert(table).values(backup_interval_s=3600, backup_grace_s=600,
                                         heartbeat_interval_s=60, **values))  # fmt: skip


def _snapshot(conn, repo_column: str, n: int, at: datetime, status: str) -> None:
    sizes = ("nfiles", "original_size", "compressed_size", "deduplicated_size", "rc")
    table = _table(
        "snapshots", agent_id=INT, report_id=TEXT, archive=TEXT, started_at=TS, finished_at=TS,
        exit_status=TEXT, warnings=sa.JSON(), received_at=TS, **dict.fromkeys(sizes, INT),
        **{repo_column: TEXT},
    )  # fmt: skip
    values = dict(nfiles=1, original_size=1000 + n, compressed_size=1, deduplicated_size=7, rc=0)
    conn.execute(
        sa.insert(table).values(
            agent_id=1, report_id=f"report-{n:04d}", archive=f"archive-{n}",
            started_at=at - timedelta(minutes=1), finished_at=at, exit_status=status,
            warnings=[], received_at=at, **values, **{repo_column: f"/srv/repo-{n}"},
        )
    )  # fmt: skip


def _columns(conn, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def _latest(conn, names: list[str]) -> tuple:
    table = _table(
        "agent_latest", **{n: TS if n.endswith("_at") else sa.types.NullType() for n in names}
    )
    return tuple(conn.execute(sa.select(*table.c)).one())


def test_renames_keep_values_and_the_trigger_both_ways(db_url):
    migrations.upgrade(db_url, "0012")
    engine = make_engine(db_url)
    cfg = migrations.alembic_config(db_url)
    try:
        with engine.begin() as conn:
            _agent(conn, "last_seen")
            _snapshot(conn, "repo", 1, NOW - timedelta(hours=2), "ok")
            _snapshot(conn, "repo", 2, NOW - timedelta(hours=1), "error")
            before = _latest(conn, OLD)
        assert before[2] == "error" and before[6] == "archive-1"  # the triggers ran at 0012

        migrations.upgrade(db_url)
        with engine.begin() as conn:
            snapshots = _columns(conn, "snapshots")
            assert "repository" in snapshots and "repo" not in snapshots
            agents = _columns(conn, "agents")
            assert "last_heartbeat_at" in agents and "last_seen" not in agents
            assert not set(OLD) & _columns(conn, "agent_latest")
            seen = conn.execute(sa.select(_table("agents", last_heartbeat_at=TS).c[0])).scalar()
            assert seen == NOW
            repos = conn.execute(sa.text("SELECT repository FROM snapshots ORDER BY id")).all()
            assert [r[0] for r in repos] == ["/srv/repo-1", "/srv/repo-2"]
            assert _latest(conn, NEW) == before
            # The trigger, made again under the new names, takes a newer successful snapshot.
            _snapshot(conn, "repository", 3, NOW, "warning")
            after = _latest(conn, NEW)
        assert after[2:4] == ("warning", False) and after[6:8] == ("archive-3", 1003)
        assert after[0] == after[4] and after[1] == after[5] == NOW

        command.downgrade(cfg, "0012")
        with engine.begin() as conn:
            assert "repo" in _columns(conn, "snapshots")
            assert "last_seen" in _columns(conn, "agents")
            assert _latest(conn, OLD) == after
            repos = conn.execute(sa.text("SELECT repo FROM snapshots ORDER BY id")).all()
            assert [r[0] for r in repos] == ["/srv/repo-1", "/srv/repo-2", "/srv/repo-3"]
            # ... and the old trigger is back: an error after it moves snap_* only.
            _snapshot(conn, "repo", 4, NOW + timedelta(minutes=5), "error")
            back = _latest(conn, OLD)
        assert back[2] == "error" and back[4:] == after[4:]
        migrations.upgrade(db_url)  # and up again
    finally:
        engine.dispose()
