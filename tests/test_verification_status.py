"""Verification on a schedule feeds status: stale/failed check, drill and escrow proof, and what
runs on a host (issue 17). The pure table first, then the same through the API on SQLite and
PostgreSQL (provisioned schedule, reports, heartbeat `running`, /metrics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from report_support import check_report, drill_report, iso, snapshot_report

from saveos_api.status import Verification, assess, running_reasons

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HB, INTERVAL, GRACE = 60, 3600, 600
DAY, WEEK = 86400, 7 * 86400


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


FRESH = dict(
    last_check_at=ago(DAY),
    check_interval_s=WEEK,
    check_grace_s=DAY,
    last_drill_at=ago(DAY),
    last_drill_result="pass",
    drill_interval_s=WEEK,
    drill_grace_s=DAY,
    last_escrow_at=ago(DAY),
    escrow_interval_s=30 * DAY,
    escrow_grace_s=WEEK,
)


def run(check_result=None, snapshot="ok", heartbeat=ago(10), **verification):
    v = Verification(**{**FRESH, **verification})
    return assess(
        NOW,
        ago(100 * DAY),
        HB,
        INTERVAL,
        GRACE,
        heartbeat,
        snapshot,
        ago(60),
        check_result,
        None,
        None,
        False,
        v,
    )


CASES = [
    # (id, overrides, status, reasons)
    ("all fresh", {}, "ok", []),
    ("check exactly at its interval: ok", {"last_check_at": ago(WEEK)}, "ok", []),
    ("stale check", {"last_check_at": ago(WEEK + 1)}, "late", ["stale check"]),
    (
        "stale check past grace",
        {"last_check_at": ago(WEEK + DAY + 1)},
        "overdue",
        ["stale check (overdue)"],
    ),
    ("failed check", {"check_result": "error"}, "failing", ["failed check"]),
    ("stale drill", {"last_drill_at": ago(WEEK + 1)}, "late", ["stale drill"]),
    (
        "drill never run: from creation",
        {"last_drill_at": None},
        "overdue",
        ["stale drill (overdue)"],
    ),
    ("failed drill", {"last_drill_result": "fail"}, "failing", ["failed drill"]),
    (
        "failed drill beats stale check",
        {"last_drill_result": "fail", "last_check_at": ago(WEEK + 1)},
        "failing",
        ["failed drill", "stale check"],
    ),
    ("stale escrow proof", {"last_escrow_at": ago(30 * DAY + 1)}, "late", ["stale escrow proof"]),
    (
        "stale escrow proof past grace",
        {"last_escrow_at": ago(37 * DAY + 1)},
        "overdue",
        ["stale escrow proof (overdue)"],
    ),
    ("no escrow schedule: never stale", {"last_escrow_at": None, "escrow_interval_s": 0}, "ok", []),
    (
        "no verification schedule at all (old agents)",
        {
            "check_interval_s": None,
            "drill_interval_s": None,
            "escrow_interval_s": None,
            "last_check_at": None,
            "last_drill_at": None,
            "last_escrow_at": None,
        },
        "ok",
        [],
    ),  # fmt: skip
    (
        "running job is named, status unchanged",
        {"running": [{"kind": "backup", "job_id": 12, "started_at": "2026-12-01T10:02:33Z"}]},
        "ok",
        ["running: backup (job 12) since 10:02"],
    ),
    (
        "running scheduled drill, stale check: both said",
        {
            "running": [{"kind": "drill", "started_at": "2026-12-01T11:58:00Z"}],
            "last_check_at": ago(WEEK + 1),
        },
        "late",
        ["stale check", "running: drill since 11:58"],
    ),  # fmt: skip
    (
        "silent names what it last said it runs",
        {
            "heartbeat": ago(3 * HB + 1),
            "running": [{"kind": "backup", "started_at": "2026-12-01T10:02:00Z"}],
        },
        "silent",
        ["no heartbeat", "last said running: backup since 10:02"],
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "overrides,status,reasons", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_status_table(overrides, status, reasons):
    assert run(**overrides)[:2] == (status, reasons)


def test_worst_reason_first_and_backup_words():
    status, reasons, reason = assess(
        NOW, ago(100 * DAY), HB, INTERVAL, GRACE, ago(10), "ok", ago(INTERVAL + 1), None, None,
        None, False, Verification(**{**FRESH, "last_check_at": ago(WEEK + DAY + 1)}),
    )  # fmt: skip
    assert status == "overdue"
    assert reasons == ["stale check (overdue)", "late backup"]
    assert reason == "overdue: last check 8 d ago"  # the first finding, with its instant


def test_running_reasons_ignore_garbage():
    assert running_reasons([{"kind": "check"}, "x", {"job_id": 3}]) == ["running: check"]


# -- through the API ------------------------------------------------------------------------------


SCHEDULE = dict(
    check_interval_s=WEEK,
    check_grace_s=DAY,
    drill_interval_s=WEEK,
    drill_grace_s=DAY,
    escrow_interval_s=30 * DAY,
    escrow_grace_s=WEEK,
)


def fleet(api, at: datetime | None = None) -> dict:
    params = {"at": iso(at)} if at else {}
    r = api.client.get("/api/v1/fleet/status", params=params, headers=api.admin)
    assert r.status_code == 200, r.text
    return {a["name"]: a for a in r.json()["agents"]}


def test_schedule_reports_and_running_through_the_api(api):
    c = api.client
    now = datetime.now(UTC)
    agent_id, headers = api.agent(
        "web1", heartbeat_interval_s=30 * DAY, backup_interval_s=60 * DAY, **SCHEDULE
    )
    agent = c.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()
    assert {k: agent[k] for k in SCHEDULE} == SCHEDULE
    for path, body in (
        ("snapshots", snapshot_report(now - timedelta(seconds=60))),
        ("checks", check_report(now - timedelta(seconds=50))),
        ("drills", drill_report(now - timedelta(seconds=40))),
    ):
        assert c.post(f"/api/v1/reports/{path}", json=body, headers=headers).status_code in (
            200,
            201,
        )
    proof = {
        "started_at": iso(now - timedelta(seconds=31)),
        "finished_at": iso(now - timedelta(seconds=30)),
        "method": "live",
        "result": "ok",
        "archives": 1,
    }
    r = c.post(f"/api/v1/agents/{agent_id}/escrow", json=proof, headers=api.admin)
    assert r.status_code in (200, 201), r.text
    started = now - timedelta(minutes=5)
    beat = {"agent_version": "0.1", "running": [{"kind": "backup", "job_id": None,
                                                 "started_at": iso(started)}]}  # fmt: skip
    assert c.post("/api/v1/agents/heartbeat", json=beat, headers=headers).status_code == 200
    row = fleet(api)["web1"]
    assert row["status"] == "ok"
    assert row["reasons"] == [f"running: backup since {started:%H:%M}"]
    assert row["running"][0]["kind"] == "backup"
    # An empty list clears it.
    beat["running"] = []
    assert c.post("/api/v1/agents/heartbeat", json=beat, headers=headers).status_code == 200
    assert fleet(api)["web1"]["reasons"] == []

    # Time passes (the 30-day heartbeat interval keeps it from going silent): first the check
    # and drill go stale, then the escrow proof.
    row = fleet(api, now + timedelta(days=8, hours=1))["web1"]
    assert row["status"] == "overdue"
    assert row["reasons"] == ["stale check (overdue)", "stale drill (overdue)"]
    row = fleet(api, now + timedelta(days=31))["web1"]
    assert "stale escrow proof" in row["reasons"]

    # A failed drill turns the host failing at once, and /metrics keeps the last *passing* one.
    failed = drill_report(now - timedelta(seconds=5), result="fail")
    assert c.post("/api/v1/reports/drills", json=failed, headers=headers).status_code in (200, 201)
    row = fleet(api)["web1"]
    assert row["status"] == "failing" and "failed drill" in row["reasons"]
    metrics = c.get("/metrics", headers=api.admin).text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    verified = families["saveos_agent_last_verified_restore_timestamp_seconds"].samples
    last_drill = families["saveos_agent_last_drill_timestamp_seconds"].samples
    assert [s.labels["agent"] for s in verified] == ["web1"]
    assert verified[0].value == pytest.approx((now - timedelta(seconds=40)).timestamp(), abs=1)
    assert last_drill[0].value == pytest.approx((now - timedelta(seconds=5)).timestamp(), abs=1)


def test_running_is_validated(api):
    _, headers = api.agent("web2")
    for bad in (
        [{"kind": "Backup!", "started_at": iso(datetime.now(UTC))}],
        [{"kind": "backup"}],
        [{"kind": "backup", "started_at": iso(datetime.now(UTC)), "extra": 1}],
        "backup",
    ):
        r = api.client.post("/api/v1/agents/heartbeat", json={"running": bad}, headers=headers)
        assert r.status_code == 422, (bad, r.text)


def test_provision_refuses_bad_verification_intervals(api):
    for bad in ({"check_interval_s": -1}, {"drill_grace_s": "1"}, {"escrow_interval_s": 10**9}):
        r = api.client.post(
            "/api/v1/agents/provision", json={"name": "web3", **bad}, headers=api.admin
        )
        assert r.status_code == 422, (bad, r.text)


def test_the_dashboard_reason_names_the_verification(api):
    """The row's one line (the dashboard's and the API's `reason`) explains the first of
    status.assess()'s findings."""
    from saveos_api.fleet import fleet_status

    c = api.client
    now = datetime.now(UTC)
    _, headers = api.agent("web9", heartbeat_interval_s=30 * DAY, backup_interval_s=60 * DAY,
                           **SCHEDULE)  # fmt: skip
    c.post("/api/v1/reports/snapshots", json=snapshot_report(now), headers=headers)
    c.post("/api/v1/reports/checks", json=check_report(now), headers=headers)
    c.post("/api/v1/reports/drills", json=drill_report(now - timedelta(days=1)), headers=headers)
    c.post("/api/v1/agents/heartbeat", json={}, headers=headers)

    def reason(at: datetime) -> str:
        with api.app.state.db.engine.connect() as conn:
            row = fleet_status(conn, at)["agents"][0]
        return row["reason"]

    assert reason(now + timedelta(days=7)).startswith("late: last drill 8")
    assert reason(now + timedelta(days=9)).startswith("overdue: last check 9")
    failed = drill_report(now + timedelta(seconds=1), result="fail")
    c.post("/api/v1/reports/drills", json=failed, headers=headers)
    assert reason(now + timedelta(seconds=2)).startswith("failing: the last restore drill failed")
