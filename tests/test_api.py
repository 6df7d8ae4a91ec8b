"""The API against real SQLite and PostgreSQL databases, in process (TestClient).

Over 400 lines on purpose: the cases of the API's core (auth, reports, jobs, fleet status,
schema) on the one `api` fixture that runs each on both databases.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from api_support import Api
from prometheus_client.parser import text_string_to_metric_families
from report_support import check_report, drill_report, iso, report_id, snapshot_report

AGENT_ENDPOINTS = [
    ("GET", "/api/v1/agents/me", None),
    ("POST", "/api/v1/agents/heartbeat", lambda: {"agent_version": "0.1"}),
    ("POST", "/api/v1/reports/snapshots", snapshot_report),
    ("POST", "/api/v1/reports/checks", check_report),
    ("POST", "/api/v1/reports/drills", drill_report),
    ("POST", "/api/v1/jobs/{job}/result", lambda: {"report_id": report_id(), "state": "succeeded"}),
]
WRITTEN_TABLES = ("heartbeats", "snapshots", "check_results", "drill_results")


@pytest.fixture
def sqlite_api(sqlite_url, tmp_path):
    api = Api(sqlite_url, tmp_path / "data")
    yield api
    api.close()


def test_provision_is_idempotent_and_rotation_revokes_old_token(api):
    c = api.client
    first = c.post("/api/v1/agents/provision", json={"name": "lab1"}, headers=api.admin)
    assert first.status_code == 201
    body = first.json()
    assert body["created"] is True and body["token"].startswith("sos_") and len(body["token"]) == 47
    old = {"Authorization": f"Bearer {body['token']}"}

    again = c.post("/api/v1/agents/provision", json={"name": "lab1"}, headers=api.admin)
    assert again.status_code == 200
    assert again.json() == {"id": body["id"], "name": "lab1", "created": False, "token": None}
    assert c.get("/api/v1/agents/me", headers=old).status_code == 200  # no rotation: still valid

    rotated = c.post(
        "/api/v1/agents/provision", json={"name": "lab1", "rotate": True}, headers=api.admin
    ).json()
    assert rotated["id"] == body["id"] and rotated["token"] not in (None, body["token"])
    assert c.get("/api/v1/agents/me", headers=old).status_code == 401
    new = {"Authorization": f"Bearer {rotated['token']}"}
    assert c.get("/api/v1/agents/me", headers=new).json()["name"] == "lab1"
    assert api.count("agents") == 1

    # Tokens are stored as keyed hashes only.
    with api.app.state.db.engine.connect() as conn:
        hashes = conn.execute(sa.text("SELECT token_hash FROM agent_tokens")).scalars().all()
    assert len(hashes) == 2
    assert all(len(h) == 64 and "sos_" not in h for h in hashes)
    assert rotated["token"][4:] not in "".join(hashes)


def test_provision_updates_declared_settings_and_revives_decommissioned(api):
    c = api.client
    agent_id, headers = api.agent("lab1", backup_interval_s=7200, labels={"role": "db"})
    agent = c.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()
    assert agent["backup_interval_s"] == 7200 and agent["labels"] == {"role": "db"}
    assert agent["heartbeat_interval_s"] == 60 and agent["backup_grace_s"] == 3600

    gone = c.delete(f"/api/v1/agents/{agent_id}", headers=api.admin)
    assert gone.status_code == 200 and gone.json()["decommissioned_at"]
    assert c.get("/api/v1/agents/me", headers=headers).status_code == 401
    status = c.get("/api/v1/fleet/status", headers=api.admin).json()
    assert status["totals"]["agents"] == 0

    back = api.provision("lab1", backup_grace_s=0)
    assert back["id"] == agent_id and back["created"] is False and back["token"]
    agent = c.get("/api/v1/agents/by-name/lab1", headers=api.admin).json()
    assert agent["decommissioned_at"] is None and agent["backup_grace_s"] == 0


@pytest.mark.parametrize(
    ("method", "path", "make_body"), AGENT_ENDPOINTS, ids=[e[1] for e in AGENT_ENDPOINTS]
)
def test_agent_endpoint_auth_matrix(sqlite_api, method, path, make_body):
    api = sqlite_api
    c = api.client
    mine, my_headers = api.agent("lab1")
    other, other_headers = api.agent("lab2")
    revoked_id, revoked_headers = api.agent("lab3")
    assert c.post(f"/api/v1/agents/{revoked_id}/tokens/revoke", headers=api.admin).json() == {
        "revoked": 1
    }
    job = c.post("/api/v1/jobs", json={"kind": "backup", "agents": [mine]}, headers=api.admin)
    job_id = job.json()["jobs"][0]["id"]
    url = path.format(job=job_id)
    before = {t: api.count(t) for t in WRITTEN_TABLES}

    def call(headers):
        body = make_body() if make_body else None
        return c.request(method, url, json=body, headers=headers)

    cases = {
        "none": ({}, 401),
        "not bearer": ({"Authorization": "Basic Zm9vOmJhcg=="}, 401),
        "empty bearer": ({"Authorization": "Bearer "}, 401),
        "malformed": ({"Authorization": "Bearer not-a-token"}, 401),
        "unknown": ({"Authorization": "Bearer sos_" + "A" * 43}, 401),
        "revoked": (revoked_headers, 401),
        "admin token": (api.admin, 403),
    }
    for name, (headers, expected) in cases.items():
        r = call(headers)
        assert r.status_code == expected, (name, r.status_code, r.text)
        assert "detail" in r.json()
        if expected == 401:
            assert r.headers["www-authenticate"] == "Bearer"
    if "{job}" in path:  # the one agent endpoint addressing a resource: another agent's job
        assert call(other_headers).status_code == 403
        assert c.get(f"/api/v1/jobs/{job_id}", headers=api.admin).json()["state"] == "queued"
    assert {t: api.count(t) for t in WRITTEN_TABLES} == before, "a refused request wrote rows"
    assert call(my_headers).status_code in (200, 201)


def test_agent_tokens_cannot_use_admin_endpoints(sqlite_api):
    api = sqlite_api
    agent_id, headers = api.agent("lab1")
    for method, url in [
        ("GET", "/api/v1/agents"),
        ("GET", f"/api/v1/agents/{agent_id}"),
        ("GET", "/api/v1/fleet/status"),
        ("POST", f"/api/v1/agents/{agent_id}/tokens/revoke"),
        ("DELETE", f"/api/v1/agents/{agent_id}"),
    ]:
        assert api.client.request(method, url, headers=headers).status_code == 403, url
    r = api.client.post("/api/v1/agents/provision", json={"name": "x"}, headers=headers)
    assert r.status_code == 403
    wrong = {"Authorization": "Bearer adm_" + "x" * 40}
    assert api.client.get("/api/v1/agents", headers=wrong).status_code == 401
    assert api.count("agents") == 1
    assert api.client.get("/api/v1/agents/me", headers=headers).status_code == 200


def test_snapshot_report_with_another_agents_job_is_forbidden(sqlite_api):
    api = sqlite_api
    mine, my_headers = api.agent("lab1")
    other, _ = api.agent("lab2")
    job = api.client.post(
        "/api/v1/jobs", json={"kind": "backup", "agents": [other]}, headers=api.admin
    ).json()["jobs"][0]
    r = api.client.post(
        "/api/v1/reports/snapshots", json=snapshot_report(job_id=job["id"]), headers=my_headers
    )
    assert r.status_code == 403
    r = api.client.post(
        "/api/v1/reports/snapshots", json=snapshot_report(job_id=10**12), headers=my_headers
    )
    assert r.status_code == 422 and "job_id" in json.dumps(r.json())
    assert api.count("snapshots") == 0


@pytest.mark.parametrize(
    ("url", "make"),
    [
        ("/api/v1/reports/snapshots", snapshot_report),
        ("/api/v1/reports/checks", check_report),
        ("/api/v1/reports/drills", drill_report),
    ],
)
def test_report_replay_is_recorded_exactly_once(api, url, make):
    table = {"snapshots": "snapshots", "checks": "check_results", "drills": "drill_results"}[
        url.rsplit("/", 1)[1]
    ]
    _, headers = api.agent("lab1")
    _, other_headers = api.agent("lab2")
    body = make()
    first = api.client.post(url, json=body, headers=headers)
    assert first.status_code == 201 and first.json()["duplicate"] is False
    replay = api.client.post(url, json=body, headers=headers)
    assert replay.status_code == 200
    assert replay.json() == {"id": first.json()["id"], "duplicate": True}
    assert api.count(table) == 1
    # The same report_id from another agent is that agent's own report.
    assert api.client.post(url, json=body, headers=other_headers).status_code == 201
    assert api.count(table) == 2


def test_jobs_are_delivered_once_through_heartbeat_and_completed(api):
    c = api.client
    a1, h1 = api.agent("lab1")
    a2, h2 = api.agent("lab2")
    created = c.post(
        "/api/v1/jobs",
        json={"kind": "backup", "agents": ["lab1", a2], "requested_by": "ops"},
        headers=api.admin,
    )
    assert created.status_code == 201
    jobs = {j["agent_id"]: j for j in created.json()["jobs"]}
    assert set(jobs) == {a1, a2} and all(j["state"] == "queued" for j in jobs.values())

    beat = c.post("/api/v1/agents/heartbeat", json={"agent_version": "0.1.0"}, headers=h1).json()
    assert beat["agent_id"] == a1
    assert beat["jobs"] == [{"id": jobs[a1]["id"], "kind": "backup", "params": {}}]
    assert c.post("/api/v1/agents/heartbeat", json={}, headers=h1).json()["jobs"] == []
    job = c.get(f"/api/v1/jobs/{jobs[a1]['id']}", headers=api.admin).json()
    assert job["state"] == "running" and job["started_at"]
    # lab2's job is untouched by lab1's heartbeat.
    assert c.get(f"/api/v1/jobs/{jobs[a2]['id']}", headers=api.admin).json()["state"] == "queued"

    result = {"report_id": report_id(), "state": "succeeded", "result": {"archive": "a1"}}
    url = f"/api/v1/jobs/{jobs[a1]['id']}/result"
    assert c.post(url, json=result, headers=h2).status_code == 403
    done = c.post(url, json=result, headers=h1)
    assert done.status_code == 201
    assert c.post(url, json=result, headers=h1).json() == {"id": jobs[a1]["id"], "duplicate": True}
    conflict = dict(result, report_id=report_id(), state="failed")
    assert c.post(url, json=conflict, headers=h1).status_code == 409
    job = c.get(f"/api/v1/jobs/{jobs[a1]['id']}", headers=api.admin).json()
    assert job["state"] == "succeeded" and job["result"] == {"archive": "a1"}
    # Who asked is the token, not what the client says (requested_by "ops" is only a note).
    assert job["finished_at"] and job["requested_by"] == "token 1 (server-init)"
    assert c.post("/api/v1/jobs/999999/result", json=result, headers=h1).status_code == 404

    agent = c.get(f"/api/v1/agents/{a1}", headers=api.admin).json()
    assert agent["agent_version"] == "0.1.0" and agent["last_heartbeat"]
    assert agent["last_seen"] == agent["last_heartbeat"]  # deprecated, still sent

    bad = c.post("/api/v1/jobs", json={"kind": "backup", "agents": ["nope"]}, headers=api.admin)
    assert bad.status_code == 422 and "nope" in bad.text


def test_fleet_status_as_of_an_instant(api):
    c = api.client
    now = datetime.now(UTC)
    names = {}
    for name in ("ok", "late", "overdue", "failing", "never", "silent", "checkfail", "locked"):
        names[name], headers = api.agent(name, backup_interval_s=3600, backup_grace_s=600)
        if name != "silent":
            assert c.post("/api/v1/agents/heartbeat", json={}, headers=headers).status_code == 200
        finished = {"late": now - timedelta(seconds=3700), "overdue": now - timedelta(days=1)}
        if name in ("ok", "late", "overdue", "failing", "checkfail", "locked"):
            r = c.post(
                "/api/v1/reports/snapshots",
                json=snapshot_report(finished.get(name, now - timedelta(seconds=60))),
                headers=headers,
            )
            assert r.status_code == 201, r.text
        if name == "failing":
            c.post(
                "/api/v1/reports/snapshots",
                json=snapshot_report(status="error", archive=""),
                headers=headers,
            )
        if name == "locked":
            r = c.post(
                "/api/v1/reports/snapshots",
                json=snapshot_report(status="error", archive="", locked=True),
                headers=headers,
            )
            assert r.status_code == 201, r.text
        if name == "checkfail":
            c.post("/api/v1/reports/checks", json=check_report(result="error"), headers=headers)
            c.post("/api/v1/reports/drills", json=drill_report(), headers=headers)

    def fleet(at):
        r = c.get("/api/v1/fleet/status", params={"at": iso(at)}, headers=api.admin)
        assert r.status_code == 200, r.text
        return r.json()

    # "silent" was created just now and never heartbeated: give it 3 intervals, no more.
    soon = fleet(now + timedelta(seconds=10))
    by_name = {a["name"]: a for a in soon["agents"]}
    assert {n: a["status"] for n, a in by_name.items()} == {
        "ok": "ok",
        "late": "late",
        "overdue": "overdue",
        "failing": "failing",
        "never": "never",
        "silent": "never",
        "checkfail": "failing",
        "locked": "locked",
    }
    assert soon["totals"]["agents"] == 8
    assert soon["totals"]["by_status"]["failing"] == 2
    assert soon["totals"]["by_status"]["locked"] == 1
    assert soon["totals"]["original_size"] == 6 * 1000
    failing = by_name["failing"]
    assert failing["last_snapshot_status"] == "error" and failing["last_archive"].startswith(
        "host-"
    )
    assert by_name["checkfail"]["last_check_result"] == "error"
    assert by_name["checkfail"]["last_drill_result"] == "pass"
    assert by_name["ok"]["last_heartbeat"] and by_name["silent"]["last_heartbeat"] is None

    later = {a["name"]: a["status"] for a in fleet(now + timedelta(minutes=10))["agents"]}
    assert set(later.values()) == {"silent"}  # nobody heartbeated for 10 minutes

    # Before the snapshots existed, the agents that had heartbeated had no backup yet.
    before = {a["name"]: a for a in fleet(now - timedelta(days=2))["agents"]}
    assert before["ok"]["last_backup_at"] is None and before["ok"]["last_heartbeat"] is None

    bad = c.get("/api/v1/fleet/status", params={"at": "2026-01-01T00:00:00"}, headers=api.admin)
    assert bad.status_code == 422 and "at" in bad.text


def test_metrics_expose_fleet_gauges_and_request_metrics(sqlite_api):
    api = sqlite_api
    c = api.client
    _, headers = api.agent("lab1")
    c.post("/api/v1/agents/heartbeat", json={}, headers=headers)
    done = datetime.now(UTC) - timedelta(seconds=5)
    c.post("/api/v1/reports/snapshots", json=snapshot_report(done), headers=headers)
    c.post("/api/v1/reports/checks", json=check_report(done), headers=headers)
    api.agent("lab2")
    c.get("/api/v1/agents/1", headers=api.admin)
    c.get("/api/v1/agents/2", headers=api.admin)

    r = c.get("/metrics", headers=api.admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    assert samples[("saveos_database_up", ())] == 1
    last_backup = samples[("saveos_agent_last_backup_timestamp_seconds", (("agent", "lab1"),))]
    assert last_backup == pytest.approx(done.timestamp(), abs=1e-3)
    assert ("saveos_agent_last_check_timestamp_seconds", (("agent", "lab1"),)) in samples
    assert ("saveos_agent_last_heartbeat_timestamp_seconds", (("agent", "lab1"),)) in samples
    assert ("saveos_agent_last_drill_timestamp_seconds", (("agent", "lab1"),)) not in samples
    assert samples[("saveos_agents", (("status", "ok"),))] == 1
    assert samples[("saveos_agents", (("status", "never"),))] == 1
    # Requests are labelled by route template, so two ids make one series.
    key = (
        "saveos_http_requests_total",
        (("method", "GET"), ("route", "/api/v1/agents/{agent_id}"), ("status", "200")),
    )
    assert samples[key] == 2
    hist = (
        "saveos_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/api/v1/agents/heartbeat")),
    )
    assert samples[hist] == 1
    assert not any(dict(k[1]).get("route") == "/api/v1/agents/1" for k in samples)


def test_heartbeat_history_is_bounded(migrated_db_url, tmp_path):
    api = Api(migrated_db_url, tmp_path / "data", heartbeat_history=5)
    try:
        _, headers = api.agent("lab1")
        for _ in range(70):
            assert api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers).is_success
        # Trimmed every 32 beats down to the bound: never more than bound + 31 rows.
        assert 5 <= api.count("heartbeats") <= 5 + 31
        assert api.count("heartbeats") < 70
    finally:
        api.close()


def test_snapshots_are_paginated_newest_first(sqlite_api):
    api = sqlite_api
    agent_id, headers = api.agent("lab1")
    now = datetime.now(UTC)
    for i in range(5):
        body = snapshot_report(now - timedelta(hours=i), archive=f"a{i}")
        api.client.post("/api/v1/reports/snapshots", json=body, headers=headers)
    page = api.client.get(
        f"/api/v1/agents/{agent_id}/snapshots", params={"limit": 2, "offset": 1}, headers=api.admin
    ).json()
    assert page["total"] == 5 and [s["archive"] for s in page["snapshots"]] == ["a1", "a2"]
    assert page["snapshots"][0]["finished_at"].endswith("Z")
    assert api.client.get("/api/v1/agents/999/snapshots", headers=api.admin).status_code == 404


BAD_SNAPSHOTS = [
    ("negative size", {"original_size": -1}, "original_size"),
    ("size beyond int64", {"nfiles": 2**70}, "nfiles"),
    ("wrong type", {"nfiles": "many"}, "nfiles"),
    ("far future", {"finished_at": "2999-01-01T00:00:00Z"}, "finished_at"),
    ("no timezone", {"started_at": "2026-01-01T00:00:00"}, "started_at"),
    ("bad report id", {"report_id": "short"}, "report_id"),
    ("unknown field", {"colour": "red"}, "colour"),
    ("bad status", {"exit_status": "great"}, "exit_status"),
    ("NUL in text", {"message": "a\x00b"}, "message"),
    ("infinite duration", {"duration_s": "Infinity"}, "duration_s"),
    ("boolean duration", {"duration_s": True}, "duration_s"),  # found by schemathesis
    ("lone surrogate", {"archive": "\ud800"}, "archive"),
    ("missing field", {"repo": None}, "repository.url"),
    (
        "two repositories",
        {"repository": {"url": "/srv/other", "server": None, "path": "/srv/other"}},
        "repo and repository.url name different repositories",
    ),
]


@pytest.mark.parametrize(
    ("change", "field"), [c[1:] for c in BAD_SNAPSHOTS], ids=[c[0] for c in BAD_SNAPSHOTS]
)
def test_bad_report_is_rejected_naming_the_field(sqlite_api, change, field):
    api = sqlite_api
    _, headers = api.agent("lab1")
    body = snapshot_report()
    body.update(change)
    if change.get("repo", "") is None:
        del body["repo"]
    raw = json.dumps(body, allow_nan=True)
    r = api.client.post(
        "/api/v1/reports/snapshots",
        content=raw,
        headers={**headers, "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json()["detail"])
    assert api.count("snapshots") == 0


def test_snapshot_repository_is_taken_by_either_name(api):
    """`repo` (older agents) or `repository.url`, or both when they agree; stored once and
    answered under both keys (`repo` deprecated)."""
    agent_id, headers = api.agent("lab1")
    where = {"server": None, "path": "/var/lib/saveos/repo"}
    bodies = {
        "old": snapshot_report(archive="old"),
        "new": snapshot_report(archive="new", repository={"url": "/srv/new", **where}),
        "both": snapshot_report(archive="both", repository={"url": "/srv/both", **where}),
    }
    del bodies["new"]["repo"]
    bodies["both"]["repo"] = "/srv/both"
    for body in bodies.values():
        r = api.client.post("/api/v1/reports/snapshots", json=body, headers=headers)
        assert r.status_code == 201, r.text
    page = api.client.get(f"/api/v1/agents/{agent_id}/snapshots", headers=api.admin).json()
    stored = {s["archive"]: (s["repository"], s["repo"]) for s in page["snapshots"]}
    assert stored == {
        "old": ("/var/lib/saveos/repo",) * 2,
        "new": ("/srv/new",) * 2,
        "both": ("/srv/both",) * 2,
    }


def test_repository_location_is_answered_under_both_names(api):
    """Where the agent's repository lives, under the glossary's `repository_*` keys and the
    deprecated `repo_*` ones beside them (the same values; marked deprecated in the OpenAPI
    schema): an Agent, a fleet status row, the metrics."""
    agent_id, headers = api.agent("lab1")
    path = "/srv/saveos-repos/lab1"
    where = {"url": f"ssh://saveos@repo1{path}", "server": "repo1", "path": path,
             "quota_bytes": 5_000_000, "used_bytes": 1_234}  # fmt: skip
    done = datetime.now(UTC) - timedelta(seconds=5)
    body = snapshot_report(done, repository=where)
    del body["repo"]  # repository.url names it
    r = api.client.post("/api/v1/reports/snapshots", json=body, headers=headers)
    assert r.status_code == 201, r.text
    expected = {k: where[k] for k in ("server", "path", "quota_bytes", "used_bytes")}
    c, admin = api.client, api.admin
    one = c.get(f"/api/v1/agents/{agent_id}", headers=admin).json()
    listed = c.get("/api/v1/agents", headers=admin).json()["agents"][0]
    me = c.get("/api/v1/agents/me", headers=headers).json()
    row = c.get("/api/v1/fleet/status", headers=admin).json()["agents"][0]
    for answer in (one, listed, me, row):
        assert {k: answer[f"repository_{k}"] for k in expected} == expected, answer
        assert {k: answer[f"repo_{k}"] for k in expected} == expected, answer
    for agent in (one, listed, me):
        assert agent["repository_reported_at"] == agent["repo_reported_at"]
        assert datetime.fromisoformat(agent["repository_reported_at"]) == done

    schemas = api.app.openapi()["components"]["schemas"]  # not published: read in process
    for name, suffixes in (("AgentOut", [*expected, "reported_at"]), ("AgentStatusOut", expected)):
        fields = schemas[name]["properties"]
        assert {s for s in suffixes if fields[f"repo_{s}"].get("deprecated")} == set(suffixes)
        assert not any(fields[f"repository_{s}"].get("deprecated") for s in suffixes)

    metrics = c.get("/metrics", headers=admin).text
    labels = f'agent="lab1",path="{path}",server="repo1"'
    assert f"saveos_agent_repository_used_bytes{{{labels}}} 1234.0" in metrics
    assert f"saveos_agent_repository_quota_bytes{{{labels}}} 5e+06" in metrics


def test_every_deprecated_key_is_its_twin_in_the_api_schema_and_cli(api):
    """saveos_rules.DEPRECATED_KEYS is read by all three: each deprecated key is answered with
    its current key's value wherever that key is (an Agent, a fleet status row), documented
    beside it with the same type and marked deprecated, and `saveos status` fills the current
    key from it when an older API sends only the old one."""
    from saveos_rules import DEPRECATED_KEYS, FLEET_ROW_DEPRECATED, FLEET_ROW_KEYS

    from saveos_api.schemas import AgentOut, AgentStatusOut
    from saveos_cli.commands.status import status_report

    agent_id, headers = api.agent("lab1")
    where = {"url": "ssh://saveos@repo1/srv/r/lab1", "server": "repo1", "path": "/srv/r/lab1",
             "quota_bytes": 5_000_000, "used_bytes": 1_234}  # fmt: skip
    body = snapshot_report(repository=where)
    del body["repo"]  # repository.url names it
    r = api.client.post("/api/v1/reports/snapshots", json=body, headers=headers)
    assert r.status_code == 201, r.text
    agent = api.client.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()
    fleet = api.client.get("/api/v1/fleet/status", headers=api.admin).json()
    row = fleet["agents"][0]
    schemas = api.app.openapi()["components"]["schemas"]
    answers = ((agent, schemas["AgentOut"]), (row, schemas["AgentStatusOut"]))

    def shape(field: dict) -> dict:
        return {k: v for k, v in field.items() if k not in ("title", "description", "deprecated")}

    for old, new in DEPRECATED_KEYS.items():
        sent = [(answer, schema) for answer, schema in answers if new in answer]
        assert sent, f"{new} is in no answer"
        for answer, schema in sent:
            assert answer[old] == answer[new] is not None, (old, answer)
            fields = schema["properties"]
            assert shape(fields[old]) == shape(fields[new]), old
            assert fields[old].get("deprecated") or "Deprecated" in fields[old]["description"]
            assert not fields[new].get("deprecated"), new
    assert set(AgentOut.model_fields) >= DEPRECATED_KEYS.keys() - FLEET_ROW_DEPRECATED.keys()
    assert set(AgentStatusOut.model_fields) >= FLEET_ROW_DEPRECATED.keys()
    assert {old for old in DEPRECATED_KEYS if old in FLEET_ROW_KEYS} == set(row) & set(
        DEPRECATED_KEYS
    )

    # An older API: the current keys absent, no ages; the CLI puts back the row the API sends.
    older = {k: v for k, v in row.items() if k not in FLEET_ROW_DEPRECATED.values()}
    older = {k: v for k, v in older.items() if not k.endswith("_age_s")}
    at = datetime.fromisoformat(fleet["generated_at"])
    again = status_report({**fleet, "agents": [older]}, at)["agents"][0]
    assert {new: again[new] for new in FLEET_ROW_DEPRECATED.values()} == {
        new: row[new] for new in FLEET_ROW_DEPRECATED.values()
    }


def test_check_repository_is_taken_by_either_name(api):
    """A check report names its repository as `repository.url` or, from older agents, `repo`
    (both: the same); stored as check_results.repository; neither, or two different: 422."""
    _, headers = api.agent("lab1")
    old = check_report(report_id="check-old", repo="/srv/old")
    del old["repository"]
    bodies = [
        old,
        check_report(report_id="check-new", repository={"url": "/srv/new"}),
        check_report(report_id="check-both", repository={"url": "/srv/b"}, repo="/srv/b"),
    ]
    for body in bodies:
        r = api.client.post("/api/v1/reports/checks", json=body, headers=headers)
        assert r.status_code == 201, r.text
    refused = {
        "repo and repository.url name different repositories": check_report(repo="/srv/other"),
        "repository.url is required": {**old, "repo": None},
        "url": check_report(repository={}),
    }
    for message, body in refused.items():
        r = api.client.post("/api/v1/reports/checks", json=body, headers=headers)
        assert r.status_code == 422, r.text
        assert message in json.dumps(r.json()["detail"])
    with api.app.state.db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT report_id, repository FROM check_results")).all()
    assert sorted(rows) == [
        ("check-both", "/srv/b"),
        ("check-new", "/srv/new"),
        ("check-old", "/srv/old"),
    ]


def test_hostile_bodies_get_4xx_never_5xx(api):
    _, headers = api.agent("lab1")
    headers = {**headers, "content-type": "application/json"}
    url = "/api/v1/agents/heartbeat"
    bodies = {
        "malformed JSON": b'{"os": ',
        "invalid UTF-8": b'{"os": "\xff\xfe"}',
        "deep nesting": b'{"facts": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
        "NaN in facts": b'{"facts": {"x": NaN}}',
        "huge int in facts": b'{"facts": {"x": 1' + b"0" * 30 + b"}}",
        "NUL key in facts": b'{"facts": {"a\\u0000": 1}}',
        "not an object": b"[1, 2, 3]",
        "huge interval": b'{"heartbeat_interval_s": 100000000000000000000000}',
    }
    for name, raw in bodies.items():
        r = api.client.post(url, content=raw, headers=headers)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    assert api.count("heartbeats") == 0
    admin = api.admin
    assert (
        api.client.get("/api/v1/agents/99999999999999999999999", headers=admin).status_code == 422
    )
    assert api.client.get("/api/v1/agents/by-name/a%00b", headers=admin).status_code == 422
    assert api.client.get(
        "/api/v1/fleet/status?at=0001-01-01T00:00:00%2B14:00", headers=admin
    ).status_code in (200, 422)


def test_oversized_body_is_refused_with_413(migrated_sqlite_url, tmp_path):
    api = Api(migrated_sqlite_url, tmp_path / "data", max_body_bytes=4096)
    try:
        _, headers = api.agent("lab1")
        big = json.dumps({"facts": {"blob": "x" * 5000}})
        r = api.client.post(
            "/api/v1/agents/heartbeat",
            content=big,
            headers={**headers, "content-type": "application/json"},
        )
        assert r.status_code == 413

        def chunks():  # no Content-Length: the limit still holds
            for _ in range(10):
                yield b"x" * 1000

        r = api.client.post(
            "/api/v1/agents/heartbeat",
            content=chunks(),
            headers={**headers, "content-type": "application/json"},
        )
        assert r.status_code == 413
        assert api.count("heartbeats") == 0
    finally:
        api.close()


def test_models_match_migrations(db_url):
    """Like `alembic check`: autogenerate against a migrated database finds nothing to do."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from saveos_api import migrations
    from saveos_api.db import make_engine
    from saveos_api.models import Base

    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            tables = set(sa.inspect(conn).get_table_names())
        assert {
            "agents",
            "agent_tokens",
            "heartbeats",
            "snapshots",
            "jobs",
            "check_results",
            "drill_results",
            "alembic_version",
        } <= tables
        migrations.upgrade(db_url)  # idempotent at head
    finally:
        engine.dispose()


def test_sqlite_round_trips_aware_utc(sqlite_url):
    from saveos_api import migrations
    from saveos_api.db import make_engine
    from saveos_api.models import Agent

    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        plus2 = datetime(2026, 5, 1, 14, 0, tzinfo=UTC) + timedelta(hours=0)
        with sa.orm.Session(engine) as session:
            session.add(
                Agent(
                    name="x",
                    labels={},
                    backup_interval_s=1,
                    backup_grace_s=0,
                    heartbeat_interval_s=1,
                    heartbeat_count=0,
                    last_heartbeat_at=plus2,
                )
            )
            session.commit()
        with sa.orm.Session(engine) as session:
            seen = session.scalars(sa.select(Agent.last_heartbeat_at)).one()
        assert seen == plus2 and seen.tzinfo is not None and seen.utcoffset() == timedelta(0)
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.pg
def test_health_is_503_when_the_database_is_gone(pg_url, tmp_path):
    from conftest import _pg_exec

    api = Api(pg_url, tmp_path / "data")
    try:
        _, headers = api.agent("lab1")
        r = api.client.get("/health")
        assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}
        _pg_exec(f'DROP DATABASE "{pg_url.rsplit("/", 1)[1]}" WITH (FORCE)')
        r = api.client.get("/health")
        assert r.status_code == 503 and r.json()["database"] == "unreachable"
        assert api.client.get("/api/v1/agents", headers=api.admin).status_code == 503
        beat = api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers)
        assert beat.status_code == 503
        # /metrics needs a token, which only the database can vouch for: 503 like the rest
        # (/health, unauthenticated, says which part is down).
        assert api.client.get("/metrics", headers=api.admin).status_code == 503
    finally:
        api.close()


def test_unique_name_prefix_is_not_a_wildcard(sqlite_api):
    """by-name matches exactly (names may contain '_' and '.', which LIKE would treat specially)."""
    api = sqlite_api
    api.agent("web_1")
    assert api.client.get("/api/v1/agents/by-name/web%1", headers=api.admin).status_code == 422
    assert api.client.get("/api/v1/agents/by-name/webx1", headers=api.admin).status_code == 404
    assert api.client.get("/api/v1/agents/by-name/web_1", headers=api.admin).status_code == 200
    name = "n" + uuid.uuid4().hex
    assert api.client.get(f"/api/v1/agents/by-name/{name}", headers=api.admin).status_code == 404


def test_concurrent_heartbeats_are_group_committed_correctly(api):
    """Many beats at once share transactions, yet each gets its own answer and row, and a
    queued job still goes out exactly once even when its agent beats twice concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    agents = [api.agent(f"host{i}") for i in range(12)]
    revoked_id, revoked = api.agent("revoked")
    api.client.post(f"/api/v1/agents/{revoked_id}/tokens/revoke", headers=api.admin)
    job = api.client.post(
        "/api/v1/jobs", json={"kind": "check", "agents": [agents[0][0]]}, headers=api.admin
    ).json()["jobs"][0]
    calls = [(headers, 200) for _, headers in agents for _ in range(3)]
    calls += [(revoked, 401), (api.admin, 403)] * 3

    def beat(call):
        headers, _ = call
        return api.client.post(
            "/api/v1/agents/heartbeat", json={"agent_version": "0.2"}, headers=headers
        )

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(beat, calls))
    assert [r.status_code for r in responses] == [expected for _, expected in calls]
    for (headers, expected), r in zip(calls, responses, strict=True):
        if expected == 200:
            owner = next(agent_id for agent_id, h in agents if h is headers)
            assert r.json()["agent_id"] == owner
    delivered = [j["id"] for r in responses if r.status_code == 200 for j in r.json()["jobs"]]
    assert delivered == [job["id"]]
    assert api.count("heartbeats") == 36
    with api.app.state.db.engine.connect() as conn:
        counts = (
            conn.execute(sa.text("SELECT heartbeat_count FROM agents WHERE name LIKE 'host%'"))
            .scalars()
            .all()
        )
    assert counts == [3] * 12
    agent = api.client.get(f"/api/v1/agents/{agents[5][0]}", headers=api.admin).json()
    assert agent["agent_version"] == "0.2"
    batches = {
        s.name: s.value
        for f in text_string_to_metric_families(api.client.get("/metrics", headers=api.admin).text)
        for s in f.samples
        if s.name.startswith("saveos_heartbeat_batch_size")
    }
    assert batches["saveos_heartbeat_batch_size_sum"] == len(calls)


def test_stale_jobs_expire_and_are_never_handed_out(api):
    agent_id, headers = api.agent("lab1")
    created = api.client.post(
        "/api/v1/jobs", json={"kind": "backup", "agents": [agent_id, agent_id]}, headers=api.admin
    ).json()["jobs"]
    assert len(created) == 1  # the same agent named twice gets one job
    old = created[0]["id"]
    # Age the job past the timeout instead of waiting for it.
    with api.app.state.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET created_at = :t WHERE id = :id"),
            {"t": (datetime.now(UTC) - timedelta(days=2)).replace(tzinfo=None), "id": old},
        )
    fresh = api.client.post(
        "/api/v1/jobs", json={"kind": "check", "agents": ["lab1"]}, headers=api.admin
    ).json()["jobs"][0]["id"]
    beat = api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers).json()
    assert [j["id"] for j in beat["jobs"]] == [fresh]
    job = api.client.get(f"/api/v1/jobs/{old}", headers=api.admin).json()
    assert job["state"] == "expired" and job["finished_at"]
    late = {"report_id": report_id(), "state": "succeeded", "result": {}}
    assert (
        api.client.post(f"/api/v1/jobs/{old}/result", json=late, headers=headers).status_code == 409
    )


def test_batch_provisioning_is_one_idempotent_call(api):
    """The role provisions a whole play batch in one call: each agent answered as the single
    call would (token only when created or asked to rotate), hashed at rest, in one transaction."""
    c = api.client
    url = "/api/v1/agents/provision-batch"
    old_id, old_headers = api.agent("web0")
    batch = [{"name": "web0", "labels": {"env": "lab"}}, {"name": "web1"}, {"name": "web2"}]
    first = c.post(url, json={"agents": batch}, headers=api.admin)
    assert first.status_code == 200, first.text
    answers = first.json()["agents"]
    assert [a["name"] for a in answers] == ["web0", "web1", "web2"]
    assert answers[0] == {"id": old_id, "name": "web0", "created": False, "token": None}
    assert all(a["created"] and a["token"].startswith("sos_") for a in answers[1:])
    assert c.get("/api/v1/agents/me", headers=old_headers).status_code == 200
    assert c.get(f"/api/v1/agents/{old_id}", headers=api.admin).json()["labels"] == {"env": "lab"}
    for answer in answers[1:]:
        me = c.get("/api/v1/agents/me", headers={"Authorization": f"Bearer {answer['token']}"})
        assert me.json()["id"] == answer["id"]
    with api.app.state.db.engine.connect() as conn:
        hashes = "".join(conn.execute(sa.text("SELECT token_hash FROM agent_tokens")).scalars())
    assert not any(a["token"][4:] in hashes for a in answers[1:])

    # Again: nothing new; a rotation asked for one agent revokes only that agent's token.
    again = c.post(url, json={"agents": [*batch[1:], {"name": "web0", "rotate": True}]},
                   headers=api.admin).json()["agents"]  # fmt: skip
    assert [(a["name"], a["created"], a["token"] is None) for a in again] == [
        ("web1", False, True),
        ("web2", False, True),
        ("web0", False, False),
    ]
    assert c.get("/api/v1/agents/me", headers=old_headers).status_code == 401
    assert api.count("agents") == 3 and api.count("agent_tokens") == 4

    # Bad batches: a clear 422, nothing provisioned; only an admin token may provision.
    for bad in ({"agents": []}, {"agents": [{"name": "x1"}, {"name": "x1"}]},
                {"agents": [{"name": "x2"}, {"name": "-bad"}]}):  # fmt: skip
        assert c.post(url, json=bad, headers=api.admin).status_code == 422, bad
    assert c.post(url, json={"agents": [{"name": "x3"}]}, headers=old_headers).status_code in (
        401,
        403,
    )
    assert api.count("agents") == 3


def test_concurrent_provisioning_creates_each_agent_once(api):
    from concurrent.futures import ThreadPoolExecutor

    def provision(i):
        body = {"name": f"race{i % 4}"}
        return api.client.post("/api/v1/agents/provision", json=body, headers=api.admin)

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(provision, range(48)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert sum(r.status_code == 201 for r in responses) == 4
    assert sum(r.json()["token"] is not None for r in responses) == 4
    assert api.count("agents") == 4 and api.count("agent_tokens") == 4


def test_heartbeat_declarations_update_the_agent(api):
    """Declared fields overwrite the agent row (omitted ones are kept), each beat is stored with
    its own facts, and a JSON content type with parameters takes the same path."""
    agent_id, headers = api.agent("lab1")
    url = "/api/v1/agents/heartbeat"
    first = {
        "agent_version": "0.3",
        "hostname": "lab1.example",
        "facts": {"cpus": 2, "disks": ["sda"]},
        "offsite_interval_s": 7200,
    }
    r = api.client.post(url, json=first, headers=headers)
    assert r.status_code == 200 and r.json()["agent_id"] == agent_id and r.json()["jobs"] == []
    assert r.json()["server_time"].endswith("Z")
    r = api.client.post(
        url,
        content=b'{"borg_version": "1.4.0", "facts": {"cpus": 4}}',
        headers={**headers, "content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200, r.text
    agent = api.client.get(f"/api/v1/agents/{agent_id}", headers=api.admin).json()
    assert (agent["agent_version"], agent["borg_version"]) == ("0.3", "1.4.0")
    assert agent["offsite_interval_s"] == 7200
    with api.app.state.db.engine.connect() as conn:
        host, facts = conn.execute(sa.text("SELECT hostname, facts FROM agents")).one()
        stored = conn.execute(sa.text("SELECT facts FROM heartbeats ORDER BY id")).scalars()
        stored = [json.loads(f) if isinstance(f, str) else f for f in stored]
    facts = json.loads(facts) if isinstance(facts, str) else facts
    assert host == "lab1.example" and facts == {"cpus": 4}
    assert stored == [{"cpus": 2, "disks": ["sda"]}, {"cpus": 4}]
    # Not JSON, unknown field, bad token: FastAPI's own answers, nothing stored.
    plain = {**headers, "content-type": "text/plain"}
    assert api.client.post(url, content=b"{}", headers=plain).status_code == 422
    assert api.client.post(url, json={"nope": 1}, headers=headers).status_code == 422
    bad = {"Authorization": "Bearer sos_" + "x" * 43}
    r = api.client.post(url, json={}, headers=bad)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert api.client.post(url, json={}).status_code == 401
    assert api.count("heartbeats") == 2


def test_database_unavailable_is_503_and_logged(sqlite_api, caplog):
    """The client gets 503; the operator gets the cause in the server's log."""
    import sqlalchemy as sa

    api = sqlite_api
    api.provision("lab1")
    with api.app.state.db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE agents RENAME TO agents_moved"))
    with caplog.at_level("WARNING", logger="saveos_api"):
        r = api.client.get("/api/v1/agents", headers=api.admin)
    assert r.status_code == 503 and r.json() == {"detail": "database unavailable"}
    assert "database unavailable" in caplog.text and "no such table: agents" in caplog.text
