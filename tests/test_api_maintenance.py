"""Central runs in the API: pruned archives leave the snapshot list, a tampered run raises the
`tampered` status (worst after silent) until a rollback is recorded, the state endpoint hands the
next run its last good state and the archives on record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from report_support import iso, snapshot_report

from saveos_api.status import StatusInput, compute_status


def _run(result: str = "ok", finished: datetime | None = None, **extra) -> dict:
    finished = finished or datetime.now(UTC) - timedelta(seconds=1)
    body = {
        "kind": "prune",
        "result": result,
        "started_at": iso(finished - timedelta(seconds=2)),
        "finished_at": iso(finished),
    }
    if result == "ok":
        body["state"] = {
            "transaction": 24,
            "archives": {"web1-a3": "ab" * 32},
            "segments": {"24": [1234, 1, 2, None], "20": [99, 3, 4, "cd" * 32]},
            "log_sha256": "ef" * 32,
            "finished_at": iso(finished),
        }
    body.update(extra)
    return body


def _status(api) -> str:
    r = api.client.get("/api/v1/fleet/status", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["agents"][0]


def test_prune_tamper_rollback_through_the_api(api):
    c = api.client
    agent_id, headers = api.agent("web1", heartbeat_interval_s=86400)
    assert c.post("/api/v1/agents/heartbeat", json={}, headers=headers).status_code in (200, 202)
    base = datetime.now(UTC) - timedelta(hours=3)
    for i in range(1, 4):
        snap = snapshot_report(base + timedelta(minutes=i), archive=f"web1-a{i}")
        assert c.post("/api/v1/reports/snapshots", json=snap, headers=headers).status_code == 201
    failed = snapshot_report(base + timedelta(minutes=5), status="error", archive="web1-bad")
    c.post("/api/v1/reports/snapshots", json=failed, headers=headers)

    state = c.get(f"/api/v1/agents/{agent_id}/maintenance/state", headers=api.admin).json()
    assert state["state"] is None and state["last_maintained_at"] is None
    assert sorted(state["archives_on_record"]) == ["web1-a1", "web1-a2", "web1-a3"]

    r = c.post(
        f"/api/v1/agents/{agent_id}/maintenance",
        json=_run(pruned=["web1-a1", "web1-a2"], archives=1, transaction=24),
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["pruned"] == ["web1-a1", "web1-a2"] and r.json()["transaction_id"] == 24
    page = c.get(f"/api/v1/agents/{agent_id}/snapshots", headers=api.admin).json()
    assert [s["archive"] for s in page["snapshots"]] == ["web1-bad", "web1-a3"]
    assert page["total"] == 2
    everything = c.get(
        f"/api/v1/agents/{agent_id}/snapshots?include_pruned=true", headers=api.admin
    ).json()
    assert everything["total"] == 4
    assert sum(1 for s in everything["snapshots"] if s["pruned_at"]) == 2
    state = c.get(f"/api/v1/agents/{agent_id}/maintenance/state", headers=api.admin).json()
    assert state["state"]["transaction"] == 24
    assert state["state"]["segments"]["20"] == [99, 3, 4, "cd" * 32]
    assert list(state["archives_on_record"]) == ["web1-a3"]
    assert state["last_maintained_at"] is not None and state["last_verify_data_at"] is None
    # The snapshots were in /var/lib/saveos/repo: `repository=` (or the deprecated `repo=`).
    path = f"/api/v1/agents/{agent_id}/maintenance/state"
    other, here = "ssh://saveos-repo@repo1:22/srv/saveos-repos/web1", "/var/lib/saveos/repo"
    for name in ("repository", "repo"):
        elsewhere = c.get(path, params={name: other}, headers=api.admin).json()
        assert elsewhere["archives_on_record"] == {}, name
        there = c.get(path, params={name: here}, headers=api.admin).json()
        assert list(there["archives_on_record"]) == ["web1-a3"], name
    both = c.get(path, params={"repository": here, "repo": here}, headers=api.admin)
    assert list(both.json()["archives_on_record"]) == ["web1-a3"]
    refused = c.get(path, params={"repository": here, "repo": other}, headers=api.admin)
    assert refused.status_code == 422
    assert "repo and repository name different repositories" in refused.text

    finding = {"kind": "archive_missing", "message": "archives missing: web1-a3"}
    tampered = _run("tampered", findings=[{**finding, "items": ["web1-a3"]}])
    r = c.post(f"/api/v1/agents/{agent_id}/maintenance", json=tampered, headers=api.admin)
    assert r.status_code == 201, r.text
    agent = _status(api)
    assert agent["status"] == "tampered" and agent["tampered_at"]
    # the state for the next run is still the last good one
    state = c.get(f"/api/v1/agents/{agent_id}/maintenance/state", headers=api.admin).json()
    assert state["state"]["transaction"] == 24 and state["tampered_at"]

    rollback = _run("ok", kind="rollback", transaction=21, verify_data=True)
    assert (
        c.post(f"/api/v1/agents/{agent_id}/maintenance", json=rollback, headers=api.admin)
    ).status_code == 201
    assert _status(api)["status"] != "tampered"
    state = c.get(f"/api/v1/agents/{agent_id}/maintenance/state", headers=api.admin).json()
    assert state["last_verify_data_at"] == rollback["finished_at"]
    history = c.get(f"/api/v1/agents/{agent_id}/maintenance", headers=api.admin).json()
    assert [h["kind"] for h in history] == ["rollback", "prune", "prune"]
    assert [h["result"] for h in history] == ["ok", "tampered", "ok"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"result": "tampered", "state": None}, "findings"),  # tampered without findings
        ({"result": "error"}, "state"),  # a state from a run that did not end well
        ({"kind": "delete"}, "kind"),
        ({"pruned": ["x" * 300]}, "pruned"),
        (
            {"state": {"transaction": 1, "archives": {}, "segments": {"a": [1, 2, 3, None]}}},
            "state",
        ),
    ],
)
def test_bad_runs_are_422_and_change_nothing(api, change, field):
    agent_id, _ = api.agent("web2")
    body = {**_run(), **change}
    r = api.client.post(f"/api/v1/agents/{agent_id}/maintenance", json=body, headers=api.admin)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert api.count("repo_maintenance") == 0


def test_agent_token_cannot_record_or_read_central_runs(api):
    agent_id, headers = api.agent("web3")
    r = api.client.post(f"/api/v1/agents/{agent_id}/maintenance", json=_run(), headers=headers)
    assert r.status_code == 403
    r = api.client.get(f"/api/v1/agents/{agent_id}/maintenance/state", headers=headers)
    assert r.status_code == 403


def test_tampered_is_worst_after_silent():
    now = datetime.now(UTC)
    base = dict(
        now=now,
        created_at=now - timedelta(days=2),
        heartbeat_interval_s=60,
        backup_interval_s=3600,
        backup_grace_s=600,
        last_heartbeat=now - timedelta(seconds=10),
        last_snapshot_status="error",
        last_snapshot_locked=True,
        last_success_at=now - timedelta(days=1),
    )
    assert compute_status(StatusInput(**base)) == "locked"
    assert compute_status(StatusInput(**base, tampered_at=now - timedelta(hours=1))) == "tampered"
    # a tamper finding after the instant asked is not seen yet
    assert compute_status(StatusInput(**base, tampered_at=now + timedelta(hours=1))) == "locked"
    silent = {**base, "last_heartbeat": now - timedelta(hours=1)}
    assert compute_status(StatusInput(**silent, tampered_at=now - timedelta(hours=1))) == "silent"
