"""Offsite reports and escrow proofs in the API: replay, status when the offsite copy falls behind,
fleet fields, metrics, admin-only escrow endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from report_support import iso, offsite_report, snapshot_report

from saveos_api.status import StatusInput, compute_status


def test_offsite_report_replay_and_fleet_status(api):
    c = api.client
    now = datetime.now(UTC)
    agent_id, headers = api.agent(
        "web1", backup_interval_s=3600, backup_grace_s=600, heartbeat_interval_s=86400
    )
    beat = c.post("/api/v1/agents/heartbeat", json={"offsite_interval_s": 7200}, headers=headers)
    assert beat.status_code == 200, beat.text
    assert (
        c.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()["offsite_interval_s"] == 7200
    )
    c.post(
        "/api/v1/reports/snapshots",
        json=snapshot_report(now - timedelta(seconds=60)),
        headers=headers,
    )

    body = offsite_report(now - timedelta(seconds=30))
    first = c.post("/api/v1/reports/offsite", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["duplicate"] is False
    again = c.post("/api/v1/reports/offsite", json=body, headers=headers)
    assert again.status_code == 200 and again.json() == {
        "id": first.json()["id"],
        "duplicate": True,
    }
    assert api.count("offsite_syncs") == 1
    failed = offsite_report(now - timedelta(seconds=10), result="error", objects_uploaded=0)
    assert c.post("/api/v1/reports/offsite", json=failed, headers=headers).status_code == 201

    def me(at: datetime) -> dict:
        r = c.get("/api/v1/fleet/status", params={"at": iso(at)}, headers=api.admin)
        assert r.status_code == 200, r.text
        return r.json()["agents"][0]

    current = me(now)
    assert current["status"] == "ok"
    assert current["last_offsite_result"] == "error"  # the latest sync failed...
    assert current["last_offsite_at"] == body["finished_at"]  # ...the last good one stays
    assert current["offsite_interval_s"] == 7200
    # a backup every hour keeps the backup side fresh; the offsite copy falls behind
    for hours in (1, 2):
        snap = snapshot_report(now + timedelta(hours=hours))
        c.post("/api/v1/reports/snapshots", json=snap, headers=headers)
    assert me(now + timedelta(hours=2, seconds=10))["status"] == "late"
    assert me(now + timedelta(hours=2, minutes=11))["status"] == "overdue"


def test_offsite_report_validation(api):
    _, headers = api.agent("web2")
    for bad in ({"result": "maybe"}, {"bytes_uploaded": -1}, {"extra": 1}):
        r = api.client.post("/api/v1/reports/offsite", json=offsite_report(**bad), headers=headers)
        assert r.status_code == 422, r.text
    r = api.client.post("/api/v1/reports/offsite", json=offsite_report(), headers=api.admin)
    assert r.status_code == 403


def test_escrow_proofs_admin_only_and_in_status_and_metrics(api):
    c = api.client
    agent_id, headers = api.agent("db1")
    now = datetime.now(UTC)
    proof = {
        "started_at": iso(now - timedelta(seconds=4)),
        "finished_at": iso(now - timedelta(seconds=1)),
        "method": "offsite",
        "result": "ok",
        "archives": 3,
        "message": "opened",
    }
    assert (
        c.post(f"/api/v1/agents/{agent_id}/escrow", json=proof, headers=headers).status_code == 403
    )
    assert c.post("/api/v1/agents/999/escrow", json=proof, headers=api.admin).status_code == 404
    assert (
        c.get("/api/v1/fleet/status", headers=api.admin).json()["agents"][0]["last_escrow_at"]
        is None
    )
    r = c.post(f"/api/v1/agents/{agent_id}/escrow", json=proof, headers=api.admin)
    assert r.status_code == 201 and r.json()["duration_s"] == 3.0
    bad = dict(proof, result="fail", finished_at=iso(now))
    assert (
        c.post(f"/api/v1/agents/{agent_id}/escrow", json=bad, headers=api.admin).status_code == 201
    )
    row = c.get("/api/v1/fleet/status", headers=api.admin).json()["agents"][0]
    assert row["last_escrow_at"] == proof["finished_at"] and row["last_escrow_result"] == "fail"
    history = c.get(f"/api/v1/agents/{agent_id}/escrow", headers=api.admin).json()
    assert [p["result"] for p in history] == ["fail", "ok"]
    metrics = c.get("/metrics", headers=api.admin).text
    assert 'saveos_agent_last_escrow_proof_timestamp_seconds{agent="db1"}' in metrics


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offsite_interval", "last_offsite_ago", "expected"),
    [
        (None, None, "ok"),  # no offsite declared: only backups count
        (3600, 60, "ok"),
        (3600, 3600, "ok"),  # exactly at the deadline is on time
        (3600, 3601, "late"),
        (3600, 3600 + 600, "late"),
        (3600, 3600 + 601, "overdue"),
        (3600, None, "overdue"),  # never synced: counted from the agent's creation
    ],
)
def test_status_turns_late_overdue_when_offsite_falls_behind(
    offsite_interval, last_offsite_ago, expected
):
    last = None if last_offsite_ago is None else NOW - timedelta(seconds=last_offsite_ago)
    status = compute_status(
        StatusInput(
            now=NOW,
            created_at=NOW - timedelta(days=2),
            heartbeat_interval_s=60,
            backup_interval_s=86400,
            backup_grace_s=600,
            last_heartbeat=NOW - timedelta(seconds=5),
            last_snapshot_status="ok",
            last_success_at=NOW - timedelta(seconds=60),
            offsite_interval_s=offsite_interval,
            last_offsite_at=last,
        )
    )
    assert status == expected


def test_a_copy_made_by_the_repository_server_is_reported_by_the_controller_alone(api):
    """The controller records the copy repo1 made of web5's repository (replayable, admin only,
    the host late once it falls behind the declared interval); from then on web5's own offsite
    reports are refused: it holds no S3 credentials, so it cannot vouch for a copy."""
    c = api.client
    agent_id, headers = api.agent("web5", heartbeat_interval_s=86400)
    url = f"/api/v1/agents/{agent_id}/offsite"
    body = offsite_report(server="repo1", interval_s=7200)
    assert c.post(url, json=body, headers=headers).status_code == 403  # an agent's token
    assert api.count("offsite_syncs") == 0
    first = c.post(url, json=body, headers=api.admin)
    assert first.status_code == 201 and first.json()["duplicate"] is False, first.text
    replay = c.post(url, json=body, headers=api.admin)
    assert replay.status_code == 200 and replay.json() == {
        "id": first.json()["id"],
        "duplicate": True,
    }
    agent = c.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()
    assert (agent["offsite_server"], agent["offsite_interval_s"]) == ("repo1", 7200)
    row = c.get("/api/v1/fleet/status", headers=api.admin).json()["agents"][0]
    assert row["last_offsite_result"] == "ok" and row["last_offsite_at"] is not None

    forged = c.post("/api/v1/reports/offsite", json=offsite_report(), headers=headers)
    assert forged.status_code == 403 and "repo1" in forged.text, forged.text
    assert api.count("offsite_syncs") == 1
    bad = c.post(url, json=offsite_report(server="not a name!"), headers=api.admin)
    assert bad.status_code == 422 and "server" in bad.text
    missing = c.post("/api/v1/agents/999999/offsite", json=body, headers=api.admin)
    assert missing.status_code == 404
