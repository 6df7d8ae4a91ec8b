"""The dashboard in process (TestClient) on SQLite and PostgreSQL: login, sessions, CSRF,
pages, bad input. The browser half (Playwright, lab hosts) is
tests/acceptance/test_r13_dashboard.py.

Over 400 lines on purpose: every case drives the same in-process dashboard, logged in the same
way; one file per page would repeat that.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from api_support import Api
from report_support import check_report, snapshot_report
from web_support import csrf_of, login


def _seed(api) -> dict[str, dict]:
    """web1 ok (3 snapshots), web2 failing, web3 never; labels env=prod on web1 and web3."""
    now = datetime.now(UTC)
    agents = {}
    for name, labels in (
        ("web1", {"env": "prod"}),
        ("web2", {"env": "dev"}),
        ("web3", {"env": "prod"}),
    ):
        agent_id, headers = api.agent(name, labels=labels)
        agents[name] = {"id": agent_id, "headers": headers}
        api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers)
    for hours in (3, 2, 1):
        body = snapshot_report(now - timedelta(hours=hours), archive=f"web1-{hours}h")
        assert (
            api.client.post(
                "/api/v1/reports/snapshots", json=body, headers=agents["web1"]["headers"]
            ).status_code
            == 201
        )
    body = snapshot_report(now - timedelta(minutes=5), "error", archive="", message="borg died")
    api.client.post("/api/v1/reports/snapshots", json=body, headers=agents["web2"]["headers"])
    api.client.post(
        "/api/v1/reports/checks", json=check_report(now), headers=agents["web1"]["headers"]
    )
    return agents


def _jobs(api) -> int:
    return api.count("jobs")


def test_pages_need_a_login_and_say_why(api):
    c = api.client
    r = c.get("/fleet", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(
        "/login?reason=login&next=%2Ffleet"
    )
    bad = login(c, "adm_not-the-token-at-all-000000000000")
    assert bad.status_code == 401 and "not valid" in bad.text
    assert "saveos_session" not in c.cookies
    ok = login(c, api.admin_token, "/settings")
    assert ok.status_code == 303 and ok.headers["location"] == "/settings"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS test below
    assert api.admin_token not in cookie
    page = c.get("/settings")
    assert page.status_code == 200 and api.admin_token not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Only the cookie's HMAC is stored.
    with api.app.state.db.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT session_hash, principal, scope FROM web_sessions")
        ).all()
    value = c.cookies["saveos_session"]
    assert [(row[1], row[2]) for row in stored] == [("server-init", "admin")]
    assert value not in {row[0] for row in stored}


def test_next_never_leaves_the_site(api):
    r = login(api.client, api.admin_token, "//evil.example/x")
    assert r.headers["location"] == "/fleet"


def test_session_cookie_is_secure_under_tls(migrated_db_url, tmp_path):
    from fastapi.testclient import TestClient

    api = Api(migrated_db_url, tmp_path / "data")
    try:
        with TestClient(api.app, base_url="https://testserver") as https:
            r = login(https, api.admin_token)
            assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
    finally:
        api.close()


def test_login_without_its_csrf_token_is_refused(api):
    c = api.client
    c.get("/login")
    r = c.post("/login", data={"token": api.admin_token, "csrf_token": "forged"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert "saveos_session" not in c.cookies


def test_logout_ends_the_session_on_the_server(api):
    c = api.client
    login(c, api.admin_token)
    value = c.cookies["saveos_session"]
    page = c.get("/fleet")
    r = c.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?reason=logout"
    # The old cookie replayed (e.g. copied before logout) no longer works.
    c.cookies.clear()
    c.cookies.set("saveos_session", value)
    assert c.get("/fleet", follow_redirects=False).status_code == 303


def test_expired_session_sends_back_to_login_and_changes_nothing(api):
    agents = _seed(api)
    c = api.client
    login(c, api.admin_token)
    csrf = csrf_of(c.get("/hosts/web1").text)
    with api.app.state.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE web_sessions SET expires_at = :t"),
            {"t": datetime.now(UTC) - timedelta(seconds=1)},
        )
    before = _jobs(api)
    r = c.post(
        "/hosts/web1/jobs", data={"kind": "backup", "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and "reason=expired" in r.headers["location"]
    assert _jobs(api) == before
    page = c.get(r.headers["location"])
    assert "Your session expired" in page.text
    assert agents  # seeded


def test_every_form_needs_the_sessions_csrf_token(api):
    _seed(api)
    c = api.client
    login(c, api.admin_token)
    before = _jobs(api)
    for data in ({"kind": "backup"}, {"kind": "backup", "csrf_token": "0" * 64}):
        r = c.post("/hosts/web1/jobs", data=data)
        assert r.status_code == 403 and "nothing was changed" in r.text
    r = c.post("/fleet/jobs", data={"kind": "check", "label": "env=prod"})
    assert r.status_code == 403
    # Another origin is refused even with a valid token.
    csrf = csrf_of(c.get("/fleet").text)
    r = c.post(
        "/hosts/web1/jobs",
        data={"kind": "backup", "csrf_token": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403 and "another origin" in r.text
    assert _jobs(api) == before
    # The token of this session works (form field, or the header htmx sends).
    r = c.post(
        "/hosts/web1/jobs", data={"kind": "backup", "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    r = c.post(
        "/hosts/web1/jobs",
        data={"kind": "check"},
        headers={"X-CSRF-Token": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert _jobs(api) == before + 2
    job = c.get(r.headers["location"])
    assert "queued" in job.text and "token 1 (server-init) (dashboard)" in job.text


def test_fleet_page_counts_filters_sorts_and_explains(api):
    _seed(api)
    c = api.client
    login(c, api.admin_token)
    page = c.get("/fleet").text
    status = api.client.get("/api/v1/fleet/status", headers=api.admin).json()
    for name, count in status["totals"]["by_status"].items():
        assert f'data-status="{name}"><b>{count}</b>' in page
    # Worst first, like `saveos status`: failing, never, ok.
    assert (
        page.index('data-host="web2"')
        < page.index('data-host="web3"')
        < page.index('data-host="web1"')
    )
    assert "failing: the last backup failed" in page and "never backed up" in page
    assert "last good backup 1 h ago" in page
    only_prod = c.get("/fleet", params={"label": "env=prod"}).text
    assert 'data-host="web2"' not in only_prod and 'data-host="web1"' in only_prod
    searched = c.get("/fleet", params={"q": "EB3"}).text
    assert 'data-host="web3"' in searched and 'data-host="web1"' not in searched
    failing = c.get("/fleet", params={"status": "failing"}).text
    assert 'data-host="web2"' in failing and 'data-host="web1"' not in failing
    by_name = c.get("/fleet", params={"sort": "name", "order": "desc", "per": 25}).text
    assert by_name.index('data-host="web3"') < by_name.index('data-host="web1"')
    paged = c.get("/fleet", params={"sort": "name", "per": 25, "page": 9}).text  # clamps to 1
    assert 'data-host="web1"' in paged
    for params, message in (
        ({"status": "bogus"}, "unknown status"),
        ({"label": "noequals"}, "not KEY=VALUE"),
        ({"sort": "colour"}, "unknown sort"),
        ({"per": 7}, "rows per page"),
    ):
        r = c.get("/fleet", params=params)
        assert r.status_code == 400 and message in r.text


def test_host_page_shows_history_and_unknown_hosts_say_so(api):
    _seed(api)
    c = api.client
    login(c, api.admin_token)
    page = c.get("/hosts/web1").text
    for text in (
        "web1-1h",
        "web1-3h",
        'id="snapshot-series"',
        "Checks",
        "Escrow never proven",
        'id="queue-backup"',
    ):
        assert text in page
    assert 'Snapshots <span class="dim">(3)</span>' in page
    r = c.get("/hosts/nosuchhost")
    assert r.status_code == 404 and "There is no host named &#39;nosuchhost&#39;" in r.text
    assert 'href="/settings"' in r.text and 'id="logout"' in r.text  # the nav stays


def test_browse_and_restore_refuse_bad_input_and_queue_nothing(api):
    _seed(api)
    c = api.client
    login(c, api.admin_token)
    csrf = csrf_of(c.get("/hosts/web1/restore").text)
    before = _jobs(api)
    cases = [
        ("/hosts/nosuch/browse", {"archive": "web1-1h"}, 404, "no host named"),
        ("/hosts/web1/browse", {"archive": "web1-9h"}, 404, "no successful archive named"),
        ("/hosts/web1/browse", {"archive": "web1-1h", "path": "../etc"}, 422, "climbs out"),
        (
            "/hosts/web1/restore",
            {"archive": "nope", "paths": ["srv/x"], "target": "/var/tmp/r"},
            404,
            "no successful archive",
        ),
        (
            "/hosts/web1/restore",
            {"archive": "web1-1h", "target": "/var/tmp/r"},
            422,
            "select at least one",
        ),
        (
            "/hosts/web1/restore",
            {"archive": "web1-1h", "paths": ["srv/x"], "target": "var/tmp"},
            422,
            "not an absolute path",
        ),
        (
            "/hosts/web1/restore",
            {"archive": "web1-1h", "paths": ["srv/x"], "target": "/"},
            422,
            "cannot be /",
        ),
        (
            "/hosts/web1/restore",
            {"archive": "web1-1h", "paths": ["srv/x"], "target": "/a/../.."},
            422,
            "climbs out",
        ),
    ]
    for url, data, code, message in cases:
        r = c.post(url, data={**data, "csrf_token": csrf})
        assert r.status_code == code and message in r.text, (
            url,
            data,
            r.status_code,
            r.text[-500:],
        )
    assert _jobs(api) == before
    # A good listing request queues one `list` job, and asking again reuses it.
    first = c.post(
        "/hosts/web1/browse",
        data={"archive": "web1-1h", "path": "/srv/", "csrf_token": csrf},
        follow_redirects=False,
    )
    again = c.post(
        "/hosts/web1/browse",
        data={"archive": "web1-1h", "path": "srv", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    assert _jobs(api) == before + 1
    job = api.client.get(
        f"/api/v1/jobs/{first.headers['location'].rsplit('/', 1)[1]}", headers=api.admin
    ).json()
    assert job["kind"] == "list" and job["params"] == {
        "archive": "web1-1h",
        "path": "srv",
        "offset": 0,
        "limit": 100,
    }
    waiting = c.get(first.headers["location"])
    assert "waiting for web1" in waiting.text and 'http-equiv="refresh"' in waiting.text
    assert c.get("/hosts/web1/browse/999999").status_code == 404


def test_jobs_page_lists_queued_running_and_finished(api):
    agents = _seed(api)
    c = api.client
    login(c, api.admin_token)
    csrf = csrf_of(c.get("/fleet").text)
    r = c.post(
        "/fleet/jobs",
        data={"kind": "backup", "label": "env=prod", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303
    page = c.get(r.headers["location"]).text
    assert "Queued 2 jobs" in page
    # web1 takes its job (running), and finishes it.
    beat = c.post("/api/v1/agents/heartbeat", json={}, headers=agents["web1"]["headers"]).json()
    (job,) = beat["jobs"]
    live = c.get("/jobs", params={"partial": 1}).text
    assert (
        f'data-job="{job["id"]}" data-state="running"' in live and 'hx-trigger="every 2s"' in live
    )
    # Its progress, as the agent sends it while borg runs, on the jobs and the job page.
    progress = {"nfiles": 12345, "original_size": 2_500_000_000, "path": "srv/data/big.bin"}
    headers = agents["web1"]["headers"]
    r = c.post(f"/api/v1/jobs/{job['id']}/progress", json=progress, headers=headers)
    assert r.json() == {"updated": True}
    assert "12,345 files, 2.5 GB read" in c.get("/jobs", params={"partial": 1}).text
    page = c.get(f"/jobs/{job['id']}", params={"partial": 1}).text
    assert 'id="job-progress"' in page and "srv/data/big.bin" in page and "every 1s" in page
    done = c.post(
        f"/api/v1/jobs/{job['id']}/result",
        json={
            "report_id": "r" * 16,
            "state": "failed",
            "result": {"message": "target exists and is not empty"},
        },
        headers=agents["web1"]["headers"],
    )
    assert done.status_code == 201
    live = c.get("/jobs", params={"partial": 1}).text
    assert f'data-job="{job["id"]}" data-state="failed"' in live
    detail = c.get(f"/jobs/{job['id']}").text
    assert (
        "target exists and is not empty" in detail
        and "hx-trigger" not in detail.split('id="job-live"')[1][:200]
    )
    assert c.get("/jobs/999999").status_code == 404
    r = c.post("/fleet/jobs", data={"kind": "backup", "label": "env=nowhere", "csrf_token": csrf})
    assert r.status_code == 404 and "nothing queued" in r.text
    r = c.post("/fleet/jobs", data={"kind": "rm -rf", "label": "env=prod", "csrf_token": csrf})
    assert r.status_code == 422


def _token(api, name: str, scope: str) -> dict:
    """A real operator token of `scope` (POST /api/v1/tokens with the admin token)."""
    r = api.client.post("/api/v1/tokens", json={"name": name, "scope": scope}, headers=api.admin)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_read_session_sees_but_cannot_act(api):
    _seed(api)
    c = api.client
    reader = _token(api, "reader", "read")
    assert login(c, reader["token"]).status_code == 303
    host = c.get("/hosts/web1").text
    assert "web1-1h" in host and 'reader <span class="scope">read</span>' in host
    for control in ('id="queue-backup"', 'id="queue-check"', 'id="restore"'):
        assert control not in host
    assert 'id="queue-label"' not in c.get("/fleet").text
    assert "needs the operate scope" in c.get("/hosts/web1/restore").text
    csrf = csrf_of(host)  # the logout form's: a valid token of this session
    before = _jobs(api)
    for url, data in (
        ("/hosts/web1/jobs", {"kind": "backup"}),
        ("/fleet/jobs", {"kind": "backup", "label": "env=prod"}),
        ("/hosts/web1/browse", {"archive": "web1-1h"}),
        ("/hosts/web1/restore", {"archive": "web1-1h", "paths": ["x"], "target": "/var/tmp/r"}),
    ):
        r = c.post(url, data={**data, "csrf_token": csrf})
        assert r.status_code == 403 and "has the read scope" in r.text, (url, r.text[-300:])
    assert _jobs(api) == before
    # The API refuses the same token the same way (one authorisation).
    r = c.post(
        "/api/v1/jobs",
        json={"kind": "backup", "agents": ["web1"]},
        headers={"Authorization": f"Bearer {reader['token']}"},
    )
    assert r.status_code == 403 and _jobs(api) == before
    # An operate token's session shows the controls and acts, audited as that token.
    c.cookies.clear()
    operator = _token(api, "oncall", "operate")
    login(c, operator["token"])
    host = c.get("/hosts/web1").text
    assert 'id="queue-backup"' in host
    r = c.post("/hosts/web1/jobs", data={"kind": "drill", "csrf_token": csrf_of(host)})
    assert r.status_code == 200 and _jobs(api) == before + 1
    audit = c.get("/api/v1/audit", headers=api.admin).json()
    (event,) = [e for e in audit["events"] if e["action"] == "jobs.drill"]
    assert event["token_id"] == operator["id"] and event["detail"]["note"] == "dashboard"
    assert any(
        e["action"] == "web.login" and e["token_id"] == reader["id"] for e in audit["events"]
    )


def test_revoking_the_token_ends_its_sessions(api):
    _seed(api)
    c = api.client
    token = _token(api, "temp", "operate")
    login(c, token["token"])
    assert c.get("/fleet", follow_redirects=False).status_code == 200
    r = c.post(f"/api/v1/tokens/{token['id']}/revoke", headers=api.admin)
    assert r.status_code == 200, r.text
    r = c.get("/fleet", follow_redirects=False)
    assert r.status_code == 303 and "reason=revoked" in r.headers["location"]
    assert "was revoked or expired" in c.get(r.headers["location"]).text
    # A revoked token cannot log in again either.
    c.cookies.clear()
    assert login(c, token["token"]).status_code == 401


def test_host_page_shows_status_changes_and_databases_settings_show_channels(api):
    agents = _seed(api)
    c = api.client
    now = datetime.now(UTC)
    with api.app.state.db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO flips (agent_id, from_status, to_status, at, reason) "
                "VALUES (:a, 'ok', 'overdue', :t, 'stale backup (overdue)')"
            ),
            {"a": agents["web1"]["id"], "t": now - timedelta(hours=1)},
        )
    dumps = [{"name": "shop", "type": "postgresql", "format": "custom", "size": 123_456,
              "status": "ok"}]  # fmt: skip
    body = snapshot_report(now, archive="web1-db", databases=dumps)
    r = c.post("/api/v1/reports/snapshots", json=body, headers=agents["web1"]["headers"])
    assert r.status_code == 201, r.text
    secret_url = "mailto://alerts:s3cretpass@mail.example.org?to=ops@example.org"
    r = c.post(
        "/api/v1/alerts/channels",
        json={"url": secret_url, "name": "ops-mail", "min_status": "overdue"},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    login(c, api.admin_token)
    host = c.get("/hosts/web1").text
    flips = host.split('id="flips"')[1].split("</table>")[0]
    assert "s-ok" in flips and "s-overdue" in flips and "stale backup (overdue)" in flips
    databases = host.split('id="databases"')[1].split("</table>")[0]
    assert "web1-db" in databases and "shop" in databases and "123.5 kB" in databases
    settings = c.get("/settings").text
    channels = settings.split('id="channels"')[1].split("</table>")[0]
    assert "ops-mail" in channels and "mailto" in channels and "overdue and worse" in channels
    assert "s3cretpass" not in settings and "mail.example.org" not in settings


def test_host_page_shows_where_the_repository_lives(api):
    agents = _seed(api)
    c = api.client
    repository = {"server": "repo1", "path": "/srv/saveos-repos/web1",
                  "quota_bytes": 10_000_000_000, "used_bytes": 2_500_000_000}  # fmt: skip
    body = snapshot_report(datetime.now(UTC), archive="web1-repo", repository=repository)
    r = c.post("/api/v1/reports/snapshots", json=body, headers=agents["web1"]["headers"])
    assert r.status_code == 201, r.text
    login(c, api.admin_token)
    card = c.get("/hosts/web1").text.split('id="repository"')[1].split("</dl>")[0]
    assert "repo1" in card and "/srv/saveos-repos/web1" in card
    assert "2.5 GB used of a 10.0 GB quota" in card


def test_one_reason_for_the_dashboard_the_api_and_the_cli(api):
    """The fleet row's and the host page's reason are the API's `reason` and the findings are
    the API's `reasons` (what `saveos status` prints): status.assess() says them all."""
    import html

    agents = _seed(api)
    now = datetime.now(UTC)
    _, quiet = api.agent("web4")
    _, behind = api.agent("web5")
    api.client.post("/api/v1/agents/heartbeat", json={}, headers=behind)
    body = snapshot_report(now - timedelta(days=3), archive="web5-old")
    assert api.client.post("/api/v1/reports/snapshots", json=body, headers=behind).is_success
    with api.app.state.db.engine.begin() as conn:  # web4 last beat a day ago: silent
        conn.execute(
            sa.text(
                "UPDATE agents SET last_heartbeat_at = :t, created_at = :t WHERE name = 'web4'"
            ),
            {"t": now - timedelta(days=1)},
        )
    del agents, quiet
    c = api.client
    login(c, api.admin_token)
    rows = {a["name"]: a for a in c.get("/api/v1/fleet/status", headers=api.admin).json()["agents"]}
    assert {a["status"] for a in rows.values()} == {"ok", "failing", "never", "silent", "overdue"}
    assert rows["web5"]["reason"] == "overdue: last good backup 3 d ago"
    assert rows["web4"]["reason"].startswith("silent since ")
    fleet = c.get("/fleet").text
    for name, row in rows.items():
        assert row["reason"], row
        cell = fleet.split(f'data-host="{name}"')[1].split('class="reason"')[1].split("</td>")[0]
        assert cell.split(">", 1)[1] == html.escape(row["reason"]), (name, cell)
        host = c.get(f"/hosts/{name}").text
        assert f'id="reason">{html.escape(row["reason"])}</p>' in host, name
        if row["reasons"]:
            assert html.escape("; ".join(row["reasons"])) in host.split('id="findings"')[1]


def test_static_files_are_cached_by_version(api):
    """Versioned vendor files are kept a year; our own files are revalidated (ETag, 304)."""
    from saveos_api.web.render import HTMX

    c = api.client
    vendor = c.get(f"/static/{HTMX}")
    assert vendor.status_code == 200 and "immutable" in vendor.headers["cache-control"]
    own = c.get("/static/style.css")
    assert own.status_code == 200 and own.headers["cache-control"] == "no-cache"
    again = c.get("/static/style.css", headers={"If-None-Match": own.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
    assert c.get("/static/nothing.js").status_code == 404
