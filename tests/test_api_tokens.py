"""Scoped operator tokens (read < operate < admin), the audit log, the provisioned schedule,
allow-listed job parameters, report bounds and the closed schema pages (issue 16)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from api_support import Api
from report_support import snapshot_report


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_token(api: Api, scope: str, **body) -> dict:
    r = api.client.post(
        "/api/v1/tokens", json={"name": f"t-{scope}", "scope": scope, **body}, headers=api.admin
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_the_server_init_token_is_the_first_admin_token_and_tokens_are_stored_hashed(api):
    listed = api.client.get("/api/v1/tokens", headers=api.admin).json()["tokens"]
    assert [(t["id"], t["name"], t["scope"]) for t in listed] == [(1, "server-init", "admin")]
    made = make_token(api, "read", expires_in_s=3600)
    assert made["token"].startswith("sot_") and made["created_by"] == 1
    with api.app.state.db.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM api_tokens")).scalars().all()
    # Neither the admin token nor the new one is stored; their HMACs are.
    assert api.admin_token not in stored and made["token"] not in stored and len(stored) == 2
    assert "token" not in api.client.get("/api/v1/tokens", headers=api.admin).json()["tokens"][1]


def test_each_scope_reaches_its_endpoints_only(api):
    agent_id, agent = api.agent("h1")
    read, operate = make_token(api, "read")["token"], make_token(api, "operate")["token"]
    admin2 = make_token(api, "admin")["token"]
    cases = [  # (method, path, body, least scope)
        ("GET", "/api/v1/agents", None, "read"),
        ("GET", f"/api/v1/agents/{agent_id}/snapshots", None, "read"),
        ("GET", "/api/v1/fleet/status", None, "read"),
        ("GET", "/metrics", None, "read"),
        ("POST", "/api/v1/jobs", {"kind": "backup", "agents": ["h1"]}, "operate"),
        ("POST", "/api/v1/agents/provision", {"name": "h2"}, "admin"),
        ("GET", "/api/v1/tokens", None, "admin"),
        ("GET", "/api/v1/audit", None, "admin"),
    ]
    rank = {"read": 0, "operate": 1, "admin": 2}
    for method, path, body, least in cases:
        for scope, token in (("read", read), ("operate", operate), ("admin", admin2)):
            r = api.client.request(method, path, json=body, headers=bearer(token))
            want_ok = rank[scope] >= rank[least]
            assert (r.status_code < 300) == want_ok, (scope, path, r.status_code, r.text)
            if not want_ok:
                assert r.status_code == 403 and f"'{least}' scope" in r.json()["detail"]
        # An agent token is never an operator's token; an operator's never an agent's.
        assert api.client.request(method, path, json=body, headers=agent).status_code == 403
    assert (
        api.client.post("/api/v1/agents/heartbeat", json={}, headers=bearer(read)).status_code
        == 403
    )


def test_expired_and_revoked_tokens_are_refused_and_the_last_admin_stays(api):
    read = make_token(api, "read", expires_in_s=60)
    r = api.client.get("/api/v1/agents", headers=bearer(read["token"]))
    assert r.status_code == 200
    with api.app.state.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE api_tokens SET expires_at = :t WHERE id = :id"),
            {"t": datetime.now(UTC) - timedelta(seconds=1), "id": read["id"]},
        )
    r = api.client.get("/api/v1/agents", headers=bearer(read["token"]))
    assert r.status_code == 401 and "expired" in r.json()["detail"]

    op = make_token(api, "operate")
    revoked = api.client.post(f"/api/v1/tokens/{op['id']}/revoke", headers=api.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert api.client.get("/api/v1/agents", headers=bearer(op["token"])).status_code == 401
    # The only live admin token cannot be revoked (nobody could then manage tokens).
    last = api.client.post("/api/v1/tokens/1/revoke", headers=api.admin)
    assert last.status_code == 409
    # With a second admin, the first one can go, and stays revoked after a restart.
    admin2 = make_token(api, "admin")
    assert api.client.post("/api/v1/tokens/1/revoke", headers=api.admin).status_code == 200
    assert api.client.get("/api/v1/agents", headers=api.admin).status_code == 401
    from saveos_api.auth import ensure_first_admin_token

    # What a restart with the same configured token does: it is known, so it stays revoked.
    ensure_first_admin_token(api.app.state.db, api.app.state.secret_key, api.admin_token)
    assert api.client.get("/api/v1/agents", headers=api.admin).status_code == 401
    assert api.client.get("/api/v1/agents", headers=bearer(admin2["token"])).status_code == 200


def test_every_state_changing_call_is_audited_with_the_token_not_the_clients_word(api):
    operate = make_token(api, "operate")
    agent_id, _ = api.agent("h1")
    job = api.client.post(
        "/api/v1/jobs",
        json={"kind": "check", "agents": ["h1"], "requested_by": "root@everywhere"},
        headers=bearer(operate["token"]),
    ).json()["jobs"][0]
    assert job["requested_by"] == f"token {operate['id']} (t-operate)"
    api.client.post(f"/api/v1/agents/{agent_id}/tokens/revoke", headers=api.admin)
    api.client.delete(f"/api/v1/agents/{agent_id}", headers=api.admin)
    api.client.get("/api/v1/agents", headers=api.admin)  # reads are not audited
    events = api.client.get("/api/v1/audit", headers=api.admin).json()["events"]
    got = [(e["token_id"], e["action"], e["target"]) for e in reversed(events)]
    assert got == [
        (1, "tokens.create", f"token {operate['id']}"),
        (1, "agents.provision", f"agent {agent_id} (h1)"),
        (operate["id"], "jobs.check", str(agent_id)),
        (1, "agents.revoke_tokens", f"agent {agent_id} (h1)"),
        (1, "agents.decommission", f"agent {agent_id} (h1)"),
    ]
    assert events[2]["detail"]["note"] == "root@everywhere" and events[0]["at"]
    only = api.client.get("/api/v1/audit", params={"action": "jobs.check"}, headers=api.admin)
    assert [e["action"] for e in only.json()["events"]] == ["jobs.check"]


INJECTION = {"archive": "latest", "paths": ["etc/shadow", "--debug-profile=/etc/cron.d/x"]}


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("restore", {**INJECTION, "target": "/srv/r"}, "paths[1]"),
        ("restore", {"archive": "--help", "paths": [], "target": "/srv/r"}, "archive"),
        ("restore", {"paths": ["../../etc"], "target": "/srv/r"}, "paths[0]"),
        ("restore", {"paths": ["etc"]}, "target"),
        ("restore", {"paths": ["etc"], "target": "relative"}, "target"),
        ("restore", {"paths": ["etc"], "target": "/srv/../etc"}, "target"),
        ("restore", {"paths": ["etc"], "target": "/srv", "cwd": "/"}, "cwd"),
        ("backup", {"sources": ["/"]}, "sources"),
        ("check", {"verify_data": "yes"}, "verify_data"),
        ("drill", {"count": 5, "percent": 10}, "count"),
    ],
)
def test_job_parameters_outside_the_kinds_allow_list_are_refused(api, kind, params, field):
    api.agent("h1")
    r = api.client.post(
        "/api/v1/jobs", json={"kind": kind, "agents": ["h1"], "params": params}, headers=api.admin
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "params", field]
    assert api.count("jobs") == 0


def test_a_valid_restore_job_is_queued_clean(api):
    api.agent("h1")
    params = {"archive": "h1-2026", "paths": ["/etc/hostname"], "target": "/srv/restore/"}
    r = api.client.post(
        "/api/v1/jobs", json={"kind": "restore", "agents": ["h1"], "params": params},
        headers=api.admin,
    )  # fmt: skip
    assert r.status_code == 201
    assert r.json()["jobs"][0]["params"] == {
        "archive": "h1-2026",
        "paths": ["etc/hostname"],
        "target": "/srv/restore",
    }


def test_the_provisioned_schedule_holds_against_a_self_silencing_heartbeat(api):
    agent_id, headers = api.agent("h1", backup_interval_s=3600, heartbeat_interval_s=60)
    year = 366 * 86400
    r = api.client.post(
        "/api/v1/agents/heartbeat",
        json={"backup_interval_s": year, "heartbeat_interval_s": year},
        headers=headers,
    )
    assert r.status_code == 200
    agent = api.client.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()
    assert (agent["backup_interval_s"], agent["heartbeat_interval_s"]) == (3600, 60)
    assert agent["declared_backup_interval_s"] == year
    row = api.client.get("/api/v1/fleet/status", headers=api.admin).json()["agents"][0]
    assert row["schedule_mismatch"] is True and row["heartbeat_interval_s"] == 60
    # Stricter is taken (it can only make the alarms come sooner).
    api.client.post("/api/v1/agents/heartbeat", json={"heartbeat_interval_s": 30}, headers=headers)
    agent = api.client.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()
    assert agent["heartbeat_interval_s"] == 30 and agent["backup_interval_s"] == 3600
    # Without silence the status goes silent on the provisioned clock, not a year later.
    later = datetime.now(UTC) + timedelta(hours=1)
    at = {"at": later.isoformat()}
    row = api.client.get("/api/v1/fleet/status", params=at, headers=api.admin).json()["agents"][0]
    assert row["status"] == "silent"
    # A re-provision with the declared values clears the mismatch.
    api.provision("h1", backup_interval_s=year, heartbeat_interval_s=30)
    row = api.client.get("/api/v1/fleet/status", headers=api.admin).json()["agents"][0]
    assert row["backup_interval_s"] == year and row["schedule_mismatch"] is False


def test_reports_are_rate_limited_and_bounded_per_agent(migrated_db_url, tmp_path):
    api = Api(
        migrated_db_url, tmp_path / "data", report_burst=5, report_rate_per_min=1, reports_per_day=8
    )
    try:
        _, a = api.agent("flood")
        _, b = api.agent("quiet")
        old = datetime.now(UTC) - timedelta(days=300)  # backdated: counted when received
        codes = [
            api.client.post(
                "/api/v1/reports/snapshots", json=snapshot_report(old), headers=a
            ).status_code
            for _ in range(7)
        ]
        assert codes == [201] * 5 + [429, 429]
        r = api.client.post("/api/v1/reports/snapshots", json=snapshot_report(old), headers=a)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        # Another agent is not slowed by the flood.
        assert (
            api.client.post("/api/v1/reports/snapshots", json=snapshot_report(), headers=b)
        ).status_code == 201
        # The day's bound holds whatever the rate: the window passes, the stored count stays.
        _age_reports(api, minutes=10)
        codes = [
            api.client.post(
                "/api/v1/reports/snapshots", json=snapshot_report(old), headers=a
            ).status_code
            for _ in range(5)
        ]
        assert codes == [201, 201, 201, 429, 429]
        assert api.count("snapshots") == 8 + 1
        # One report cannot carry 800 KB of warnings any more.
        big = snapshot_report(warnings=["w" * 4096] * 200)
        assert api.client.post("/api/v1/reports/snapshots", json=big, headers=b).status_code == 422
    finally:
        api.close()


def _age_reports(api, minutes: int) -> None:
    """Make every stored report older (received earlier) by `minutes`."""
    import sqlalchemy as sa

    with api.app.state.db.engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT id, received_at FROM snapshots")).all()
        for row_id, at in rows:
            at = datetime.fromisoformat(at) if isinstance(at, str) else at
            conn.execute(
                sa.text("UPDATE snapshots SET received_at = :at WHERE id = :id"),
                {"at": at - timedelta(minutes=minutes), "id": row_id},
            )


def test_the_report_rate_holds_across_api_instances(migrated_db_url, tmp_path):
    """Two API instances (or workers) on one database share the agent's rate: the flood gets
    the burst once, not once per instance; the window then lets reports in again."""
    limits = dict(report_burst=4, report_rate_per_min=2, reports_per_day=100)
    one = Api(migrated_db_url, tmp_path / "data", **limits)
    two = Api(migrated_db_url, tmp_path / "data", **limits)  # the same config, as instances share
    try:
        _, a = one.agent("flood")
        codes = [
            api.client.post(
                "/api/v1/reports/snapshots", json=snapshot_report(), headers=a
            ).status_code
            for api in (one, two) * 4
        ]
        assert codes == [201] * 4 + [429] * 4, codes
        assert one.count("snapshots") == 4
        wait = two.client.post("/api/v1/reports/snapshots", json=snapshot_report(), headers=a)
        assert 60 <= int(wait.headers["Retry-After"]) <= 120  # the 2-minute window
        _age_reports(one, minutes=3)
        r = two.client.post("/api/v1/reports/snapshots", json=snapshot_report(), headers=a)
        assert r.status_code == 201
    finally:
        two.close()
        one.close()


def test_schema_pages_are_closed_and_metrics_need_a_read_token(api):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert api.client.get(path).status_code == 404, path
    assert api.client.get("/metrics").status_code == 401
    read = make_token(api, "read")["token"]
    assert api.client.get("/metrics", headers=bearer(read)).status_code == 200
    assert api.client.get("/health").status_code == 200  # liveness stays open
