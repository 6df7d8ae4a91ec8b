"""Migrations 0013, 0014 and 0015 rename columns to the glossary's words (#18): a database at
the revision before with rows keeps every value under the new names, the agent_latest triggers
keep working under them, and a downgrade brings the old names (and working triggers) back;
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

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


@contextmanager
def _from(db_url: str, revision: str) -> Iterator[tuple[sa.Engine, Config]]:
    """The database at `revision`, its engine and its Alembic config."""
    migrations.upgrade(db_url, revision)
    engine = make_engine(db_url)
    try:
        yield engine, migrations.alembic_config(db_url)
    finally:
        engine.dispose()


def test_renames_keep_values_and_the_trigger_both_ways(db_url):
    with _from(db_url, "0012") as (engine, cfg):
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


def _check(conn, repo_column: str, n: int, at: datetime, result: str) -> None:
    table = _table(
        "check_results", agent_id=INT, report_id=TEXT, started_at=TS, finished_at=TS,
        verify_data=sa.Boolean(), result=TEXT, rc=INT, received_at=TS, **{repo_column: TEXT},
    )  # fmt: skip
    conn.execute(
        sa.insert(table).values(
            agent_id=1, report_id=f"check-{n:04d}", started_at=at - timedelta(minutes=1),
            finished_at=at, verify_data=n % 2 == 0, result=result, rc=0 if result == "ok" else 2,
            received_at=at, **{repo_column: f"/srv/repo-{n}"},
        )
    )  # fmt: skip


def _checked(conn, column: str) -> list[str]:
    # `column` is one of the two names this test knows.
    rows = conn.execute(sa.text(f"SELECT {column} FROM check_results ORDER BY id"))  # noqa: S608
    return [r[0] for r in rows]


CHECK_LATEST = ["check_id", "check_finished_at", "check_result"]


def test_check_repository_rename_keeps_values_both_ways(db_url):
    """0014: check_results.repo -> repository; no trigger names it, check_results' keeps
    agent_latest's check_* through the rename and back."""
    with _from(db_url, "0013") as (engine, cfg):
        with engine.begin() as conn:
            _agent(conn, "last_heartbeat_at")
            for n, result in enumerate(("ok", "error"), start=1):  # 2 h, then 1 h ago
                _check(conn, "repo", n, NOW - timedelta(hours=3 - n), result)
            before = _latest(conn, CHECK_LATEST)
        assert before == (2, NOW - timedelta(hours=1), "error")  # the trigger ran at 0013

        migrations.upgrade(db_url)
        with engine.begin() as conn:
            columns = _columns(conn, "check_results")
            assert "repository" in columns and "repo" not in columns
            assert _checked(conn, "repository") == ["/srv/repo-1", "/srv/repo-2"]
            assert _latest(conn, CHECK_LATEST) == before
            _check(conn, "repository", 3, NOW, "ok")
            assert _latest(conn, CHECK_LATEST) == (3, NOW, "ok")

        command.downgrade(cfg, "0013")
        with engine.begin() as conn:
            columns = _columns(conn, "check_results")
            assert "repo" in columns and "repository" not in columns
            assert _checked(conn, "repo") == ["/srv/repo-1", "/srv/repo-2", "/srv/repo-3"]
            _check(conn, "repo", 4, NOW + timedelta(minutes=5), "error")
            assert _latest(conn, CHECK_LATEST) == (4, NOW + timedelta(minutes=5), "error")
        migrations.upgrade(db_url)  # and up again
        with engine.begin() as conn:
            assert _checked(conn, "repository")[-1] == "/srv/repo-4"


# agents' repository location (0005), by its names before 0015.
LOCATION = {
    "repo_server": ("repo1", TEXT),
    "repo_path": ("/srv/saveos-repos/web1", TEXT),
    "repo_quota_bytes": (5 * 10**12, INT),  # beyond 32 bits
    "repo_used_bytes": (1_234_567, INT),
    "repo_reported_at": (NOW - timedelta(minutes=3), TS),
}


def _location(conn, prefix: str) -> dict[str, object]:
    """The agent's location columns, named with `prefix`, by their old names."""
    names = {old: prefix + old.removeprefix("repo_") for old in LOCATION}
    table = _table("agents", **{names[old]: type_ for old, (_, type_) in LOCATION.items()})
    row = conn.execute(sa.select(*(table.c[names[old]] for old in LOCATION))).one()
    return dict(zip(LOCATION, row, strict=True))


def test_agent_repository_rename_keeps_values_both_ways(db_url):
    """0015: agents.repo_* -> repository_*, every value kept, and back on downgrade."""
    wanted = {old: value for old, (value, _) in LOCATION.items()}
    with _from(db_url, "0014") as (engine, cfg):
        with engine.begin() as conn:
            _agent(conn, "last_heartbeat_at")
            table = _table("agents", **{old: type_ for old, (_, type_) in LOCATION.items()})
            conn.execute(sa.update(table).values(**wanted))

        migrations.upgrade(db_url)
        with engine.begin() as conn:
            columns = _columns(conn, "agents")
            assert not {c for c in columns if c.startswith("repo_")}
            assert _location(conn, "repository_") == wanted

        command.downgrade(cfg, "0014")
        with engine.begin() as conn:
            assert not {c for c in _columns(conn, "agents") if c.startswith("repository_")}
            assert _location(conn, "repo_") == wanted
        migrations.upgrade(db_url)  # and up again
        with engine.begin() as conn:
            assert _location(conn, "repository_") == wanted
