"""Report batches (saveos_api/reports/): one batch of reports of every kind, submitted at once, is
answered as the reports were one at a time and stores each new report exactly once, on SQLite
and on PostgreSQL; on PostgreSQL two API instances (as two workers) flooded with one agent's
reports and replays at once still hold its bounds and store each report id once."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from api_support import Api
from fastapi import HTTPException
from report_support import check_report, drill_report, snapshot_report

from saveos_api.reports import CHECKS, DRILLS, OFFSITE, SNAPSHOTS
from saveos_api.reports.kinds import Kind

REFUSED = (401, "invalid or revoked agent token")


async def _together(writer, reports):
    # Queued before any lane wakes up: each lane writes its share as one batch.
    return await asyncio.gather(
        *(writer.submit(token, kind, kind.schema(**body)) for token, kind, body in reports),
        return_exceptions=True,
    )


def _answers(results):
    return [
        (a.status_code, a.detail) if isinstance(a, HTTPException) else (a[0], a[1]["duplicate"])
        for a in results
    ]


def _offsite(**extra) -> dict:
    body = check_report()
    return {
        "report_id": body["report_id"],
        "started_at": body["started_at"],
        "finished_at": body["finished_at"],
        "result": "ok",
        **extra,
    }


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def test_a_batch_is_answered_as_one_at_a_time_on_both_databases(request, tmp_path, database):
    url = request.getfixturevalue(
        "migrated_sqlite_url" if database == "sqlite" else "migrated_pg_url"
    )
    api = Api(url, tmp_path / "data", report_burst=3, report_rate_per_min=1)
    c = api.client
    try:
        ids, tokens = {}, {"admin": api.admin_token, "unknown": "sos_" + "x" * 43}
        for name in ("busy", "other", "revoked", "served"):
            out = api.provision(name)
            ids[name], tokens[name] = out["id"], out["token"]
        c.post(f"/api/v1/agents/{ids['revoked']}/tokens/revoke", headers=api.admin)
        with api.app.state.db.engine.begin() as conn:  # its copy is made by its repo server
            conn.execute(
                sa.text("UPDATE agents SET offsite_server = 'repo1' WHERE id = :id"),
                {"id": ids["served"]},
            )
        jobs = c.post(
            "/api/v1/jobs", json={"kind": "backup", "agents": ["busy", "other"]}, headers=api.admin
        ).json()["jobs"]
        job = {j["agent_id"]: j["id"] for j in jobs}
        stored = snapshot_report()
        headers = {"Authorization": f"Bearer {tokens['busy']}"}
        first = c.post("/api/v1/reports/snapshots", json=stored, headers=headers)
        assert first.status_code == 201
        twice = snapshot_report(repository={"server": "repo1", "path": "/srv/busy"})
        batch: list[tuple[str, Kind, dict]] = [
            ("busy", SNAPSHOTS, stored),  # a replay of a stored report
            ("busy", SNAPSHOTS, twice),  # new ...
            ("busy", SNAPSHOTS, twice),  # ... and replayed within the batch
            ("busy", SNAPSHOTS, snapshot_report(job_id=job[ids["other"]])),  # another's job
            ("busy", SNAPSHOTS, snapshot_report(job_id=10**9)),  # no such job
            ("busy", SNAPSHOTS, snapshot_report(job_id=job[ids["busy"]])),  # the 3rd stored
            ("busy", SNAPSHOTS, snapshot_report()),  # past the burst of 3
            ("busy", CHECKS, check_report()),  # its own count per kind
            ("other", DRILLS, drill_report()),
            ("revoked", CHECKS, check_report()),
            ("unknown", CHECKS, check_report()),
            ("admin", CHECKS, check_report()),
            ("served", OFFSITE, _offsite()),
            ("busy", OFFSITE, _offsite(target="s3://bucket/busy")),
        ]
        reports = [(tokens[name], kind, body) for name, kind, body in batch]
        unknown_job = f"job {10**9} does not exist"
        got = _answers(c.portal.call(_together, api.app.state.reports, reports))
        assert got[6][0] == 429 and got[6][1].startswith("too many snapshots reports")
        assert got[:6] == [
            (200, True),
            (201, False),
            (200, True),
            (403, f"job {job[ids['other']]} belongs to another agent"),
            (422, [{"loc": ["body", "job_id"], "msg": unknown_job, "type": "value_error"}]),
            (201, False),
        ]
        assert got[7:] == [
            (201, False),
            (201, False),
            REFUSED,
            REFUSED,
            (403, "this endpoint takes an agent token, not an operator's token"),
            (403, "this host's offsite copy is made by its repository server repo1"),
            (201, False),
        ]
        with api.app.state.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT agent_id, report_id, job_id FROM snapshots ORDER BY id")
            ).all()
            repo = conn.execute(
                sa.text("SELECT repository_server, repository_path FROM agents WHERE id = :id"),
                {"id": ids["busy"]},
            ).one()
            counts = {
                t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608
                for t in ("check_results", "drill_results", "offsite_syncs")
            }
        assert rows == [
            (ids["busy"], stored["report_id"], None),
            (ids["busy"], twice["report_id"], None),
            (ids["busy"], batch[5][2]["report_id"], job[ids["busy"]]),
        ]
        assert tuple(repo) == ("repo1", "/srv/busy")
        assert counts == {"check_results": 1, "drill_results": 1, "offsite_syncs": 1}
        # The stored ids are the ones acknowledged: a replay later answers the same id.
        again = c.post("/api/v1/reports/snapshots", json=twice, headers=headers)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        # Invalid bodies still get FastAPI's answers (auth first, then the field).
        bad = {**snapshot_report(), "rc": "x"}
        r = c.post("/api/v1/reports/snapshots", json=bad, headers=headers)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rc"]
        r = c.post(
            "/api/v1/reports/snapshots",
            json=bad,
            headers={"Authorization": f"Bearer {tokens['unknown']}"},
        )
        assert r.status_code == 401
    finally:
        api.close()


@pytest.mark.pg
def test_two_instances_flooded_at_once_hold_the_bounds_and_store_each_report_once(
    migrated_pg_url, tmp_path
):
    limits = dict(report_burst=10, report_rate_per_min=1, reports_per_day=1000)
    one = Api(migrated_pg_url, tmp_path / "data", **limits)
    two = Api(migrated_pg_url, tmp_path / "data", **limits)  # another worker on the same database
    try:
        flood = one.provision("flood")["token"]
        calm = [one.provision(f"calm-{i}")["token"] for i in range(20)]
        bodies = [snapshot_report() for _ in range(30)]
        # Each of the flood's reports twice on each instance, beside 20 other agents' reports.
        mine = [(flood, SNAPSHOTS, b) for b in bodies]
        theirs = [(t, SNAPSHOTS, snapshot_report()) for t in calm]

        async def both():
            return await asyncio.gather(
                _together(one.app.state.reports, mine + theirs + mine),
                _together(two.app.state.reports, mine[::-1] + mine),
            )

        # Both instances' lanes on one event loop: their batches really overlap in PostgreSQL.
        a, b = one.client.portal.call(both)
        answers = Counter(_answers(a) + _answers(b))
        with one.app.state.db.engine.connect() as conn:
            per_report = Counter(
                r for (r,) in conn.execute(sa.text("SELECT report_id FROM snapshots")).all()
            )
        flood_rows = sum(per_report[b["report_id"]] for b in bodies)
        assert flood_rows == 10  # the burst, across both instances
        assert set(per_report.values()) == {1}  # no report id stored twice
        assert sum(per_report.values()) == 10 + 20
        assert answers[(201, False)] == 10 + 20  # stored = acknowledged as new
        # Every copy of a stored report is a duplicate; every other one is refused with 429.
        assert answers[(200, True)] == 4 * 10 - 10
        assert sum(n for (status, _), n in answers.items() if status == 429) == 4 * 20
    finally:
        two.close()
        one.close()


@pytest.mark.pg
def test_a_batch_costs_the_same_statements_whatever_its_size(pg_url, tmp_path):
    """Round trips per batch, counted at the driver: the agents' rate-limit locks and the
    repositories their snapshot reports name are taken for the whole batch at once."""
    api = Api(pg_url, tmp_path / "data")
    try:
        tokens = [api.provision(f"many-{i}")["token"] for i in range(24)]
        per_batch: Counter[str] = Counter()  # statements per lane thread

        @sa.event.listens_for(api.app.state.db.engine, "before_cursor_execute")
        def count(conn, cursor, statement, parameters, context, executemany):
            per_batch[threading.current_thread().name] += 1

        def statements(count: int) -> list[int]:
            per_batch.clear()
            reports = [
                (t, SNAPSHOTS, snapshot_report(repository={"server": "r1", "path": f"/srv/{i}"}))
                for i, t in enumerate(tokens[:count])
            ]
            answers = _answers(api.client.portal.call(_together, api.app.state.reports, reports))
            assert answers == [(201, False)] * count
            return sorted(set(per_batch.values()))

        statements(len(tokens))  # every token's last_used_at is fresh from here on
        one, many = statements(1), statements(len(tokens))
        # auth, locks, replays, counts, insert, repositories
        assert one == many == [6]
        with api.app.state.db.engine.connect() as conn:
            paths = conn.execute(
                sa.text("SELECT count(DISTINCT repository_path) FROM agents")
            ).scalar()
        assert paths == len(tokens)
    finally:
        api.close()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def test_the_newest_report_names_the_repository_whatever_the_order(request, tmp_path, database):
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url")
    api = Api(url, tmp_path / "data")
    try:
        token = api.provision("moved")["token"]
        other = api.provision("quiet")["token"]
        now = datetime.now(UTC)

        def at(minutes: int, path: str, **repo):
            repository = {"server": "r1", "path": path, **repo}
            return snapshot_report(now - timedelta(minutes=minutes), repository=repository)

        def batch(*reports):
            answers = api.client.portal.call(_together, api.app.state.reports, list(reports))
            assert {a for a, _ in _answers(answers)} == {201}

        def recorded(name):
            with api.app.state.db.engine.connect() as conn:
                return tuple(
                    conn.execute(
                        sa.text(
                            "SELECT repository_path, repository_quota_bytes,"
                            " repository_used_bytes FROM agents WHERE name = :name"
                        ),
                        {"name": name},
                    ).one()
                )

        batch(
            (token, SNAPSHOTS, at(20, "/srv/old", quota_bytes=5)),
            (token, SNAPSHOTS, at(10, "/srv/new", used_bytes=7)),
            (token, SNAPSHOTS, at(30, "/srv/oldest", quota_bytes=9)),
            (other, SNAPSHOTS, snapshot_report()),  # names no repository
        )
        assert recorded("moved") == ("/srv/new", None, 7)
        assert recorded("quiet") == (None, None, None)
        batch((token, SNAPSHOTS, at(15, "/srv/replayed-late")))  # from the spool, older
        assert recorded("moved") == ("/srv/new", None, 7)
        batch((token, SNAPSHOTS, at(1, "/srv/newest", quota_bytes=3, used_bytes=2)))
        assert recorded("moved") == ("/srv/newest", 3, 2)
    finally:
        api.close()
