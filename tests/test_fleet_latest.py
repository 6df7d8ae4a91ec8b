"""agent_latest (kept by triggers) must answer the fleet status exactly as the per-agent probes
over the history tables do, whatever order reports arrive in, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from saveos_api import migrations
from saveos_api.db import make_engine
from saveos_api.fleet import fleet_rows, latest_query
from saveos_api.models import (
    Agent,
    AgentLatest,
    CheckResult,
    DrillResult,
    EscrowProof,
    OffsiteSync,
    Snapshot,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
# Columns named otherwise before 0013/0014 (the backfill test fills the schema of 0003).
OLD_NAMES = {"last_heartbeat_at": "last_seen", "repository": "repo"}


def _insert(model, values: dict, old: bool) -> sa.Insert:
    """INSERT of `values` into the model's table; `old`: only these columns, by their names
    before 0013/0014 (the model names newer columns, and defaults some the old schema lacks)."""
    if not old:
        return sa.insert(model).values(**values)
    types = model.__table__.c
    columns = [sa.column(OLD_NAMES.get(k, k), types[k].type) for k in ("id", *values)]
    table = sa.table(model.__tablename__, *columns)
    return sa.insert(table).values(**{OLD_NAMES.get(k, k): v for k, v in values.items()})


def _agent(conn: sa.Connection, name: str, old: bool = False) -> int:
    values = dict(
        name=name,
        labels={},
        backup_interval_s=3600,
        backup_grace_s=600,
        heartbeat_interval_s=60,
        heartbeat_count=0,
        created_at=NOW - timedelta(days=30),
        last_heartbeat_at=NOW - timedelta(seconds=30),
        offsite_interval_s=86400,
    )
    insert = _insert(Agent, values, old)
    return conn.execute(insert.returning(insert.table.c.id)).scalar_one()


def _report(
    conn: sa.Connection, rng: random.Random, agent_id: int, n: int, at: datetime, locks: bool
) -> None:
    """One report of a random kind finished at `at` (several share an instant on purpose);
    locks: some failed snapshots gave up on a repository lock (a column since 0004)."""
    common = dict(agent_id=agent_id, started_at=at - timedelta(minutes=5), finished_at=at)
    kind = rng.choice(("snap", "snap", "snap", "check", "drill", "offsite", "escrow"))
    if kind == "snap":
        values = dict(
            report_id=f"s{n}",
            repository="/r",
            archive=f"a{n}",
            nfiles=1,
            original_size=rng.randrange(1, 10**9),
            compressed_size=1,
            deduplicated_size=rng.randrange(1, 10**6),
            exit_status=(status := rng.choice(("ok", "warning", "error"))),
            rc=0,
            warnings=[],
            received_at=NOW,
        )
        if locks:
            values["locked"] = status == "error" and rng.random() < 0.5
        # Before 0004 (no locks): only the columns it had (no `locked` default).
        conn.execute(_insert(Snapshot, {**common, **values}, old=not locks))
    elif kind == "check":
        result = rng.choice(("ok", "error"))
        values = dict(report_id=f"c{n}", repository="/r", verify_data=False, result=result, rc=0)
        conn.execute(_insert(CheckResult, {**common, **values, "received_at": NOW}, old=not locks))
    elif kind == "drill":
        values = dict(report_id=f"d{n}", archive="a", files_checked=1, files_matched=1)
        values.update(files_mismatched=0, result=rng.choice(("pass", "fail")), received_at=NOW)
        conn.execute(sa.insert(DrillResult).values(**common, **values))
    elif kind == "offsite":
        values = dict(report_id=f"o{n}", objects=1, objects_uploaded=1, bytes_uploaded=1)
        values.update(objects_deleted=0, result=rng.choice(("ok", "error")), received_at=NOW)
        conn.execute(sa.insert(OffsiteSync).values(**common, **values))
    else:
        result = rng.choice(("ok", "fail"))
        values = dict(method="local", result=result, archives=1, received_at=NOW)
        conn.execute(sa.insert(EscrowProof).values(**common, **values))


def _fill(
    engine: sa.Engine, seed: int, agents: int = 12, reports: int = 400, locks: bool = True
) -> None:
    """Reports in random order, from two days ago to an hour ahead (a fast clock)."""
    rng = random.Random(seed)
    instants = [NOW - timedelta(minutes=rng.randrange(0, 2 * 1440)) for _ in range(36)]
    instants += [NOW + timedelta(minutes=m) for m in (1, 10, 30, 60)]
    with engine.begin() as conn:
        ids = [_agent(conn, f"host{i:02d}", old=not locks) for i in range(agents)]
        for n in range(reports):
            agent_id = rng.choice(ids[:-2])  # 2 never report
            _report(conn, rng, agent_id, n, rng.choice(instants), locks)


def _assert_same_as_probes(engine: sa.Engine, instants) -> None:
    with engine.connect() as conn:
        for at in instants:
            with conn.begin():
                expected = fleet_rows(conn, at, use_latest=False)
            with conn.begin():
                assert fleet_rows(conn, at) == expected, at


@pytest.fixture
def engine(db_url):
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def test_latest_answers_as_the_probes_do(engine):
    _fill(engine, seed=7)
    hours = [NOW + timedelta(hours=h) for h in (-49, -30, -12, -1, 0, 0.5, 2, 24)]
    _assert_same_as_probes(engine, hours)
    with engine.connect() as conn:
        # In two hours no report is newer: every row comes from agent_latest, none probed.
        stale = [row.stale for row in conn.execute(latest_query(NOW + timedelta(hours=2)))]
        assert len(stale) == 12 and not any(stale)
        # Now, only the agents with a report stamped ahead of the clock need probes.
        assert any(row.stale for row in conn.execute(latest_query(NOW)))
        kept = conn.execute(sa.select(sa.func.count()).select_from(AgentLatest)).scalar_one()
        assert kept == 10  # agents that reported; the two silent ones have no row


def test_many_stale_agents_take_one_probe_query(engine, monkeypatch):
    import saveos_api.fleet as fleet

    _fill(engine, seed=11)
    monkeypatch.setattr(fleet, "MAX_STALE_IDS", 2)
    _assert_same_as_probes(engine, [NOW - timedelta(hours=20), NOW])


def test_migration_backfills_reports_written_before_it(db_url):
    migrations.upgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        _fill(engine, seed=3, locks=False)  # no agent_latest, no triggers yet
        migrations.upgrade(db_url)
        _assert_same_as_probes(engine, [NOW + timedelta(hours=2), NOW - timedelta(hours=5)])
        with engine.connect() as conn:
            assert not any(r.stale for r in conn.execute(latest_query(NOW + timedelta(hours=2))))
    finally:
        engine.dispose()


def test_concurrent_reports_for_one_agent_keep_the_newest(pg_url):
    """Writers racing on one agent's row: each trigger compares with the committed newest."""
    migrations.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            agent_id = _agent(conn, "raced")
        stamps = [NOW - timedelta(seconds=s) for s in range(200)]
        random.Random(5).shuffle(stamps)
        barrier = threading.Barrier(4)

        def writer(part: list[datetime], w: int) -> None:
            barrier.wait()
            for n, at in enumerate(part):
                with engine.begin() as conn:
                    conn.execute(
                        sa.insert(Snapshot).values(
                            agent_id=agent_id,
                            report_id=f"w{w}-{n}",
                            repository="/r",
                            archive=f"w{w}-{n}",
                            started_at=at,
                            finished_at=at,
                            nfiles=1,
                            original_size=1,
                            compressed_size=1,
                            deduplicated_size=1,
                            exit_status="ok",
                            rc=0,
                            warnings=[],
                            received_at=NOW,
                        )
                    )

        threads = [threading.Thread(target=writer, args=(stamps[w::4], w)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with engine.connect() as conn:
            kept = conn.execute(sa.select(AgentLatest)).one()
            newest = conn.execute(
                sa.select(Snapshot.id, Snapshot.archive).where(Snapshot.finished_at == NOW)
            ).one()
        kept_row = (
            kept.snapshot_id,
            kept.last_successful_archive,
            kept.last_successful_finished_at,
        )
        assert kept_row == (
            newest.id,
            newest.archive,
            NOW,
        )
        _assert_same_as_probes(engine, [NOW, NOW - timedelta(seconds=100)])
    finally:
        engine.dispose()
