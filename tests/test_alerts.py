"""Alerts against real receivers on loopback: aiosmtpd for mail, an HTTP server for webhooks.

The API runs in process (TestClient, its lifespan runs the evaluator and the outbox worker) or,
for several workers, as real `saveos server` processes; periods are shortened through the
SAVEOS_ALERT_* settings so each case takes seconds.

Over 400 lines on purpose: every case uses the same receivers, shortened periods (FAST) and
workers (test_alerts_lab imports both); one file per rule would repeat that set-up.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import cli_support
import pytest
import sqlalchemy as sa
from alert_support import Mailbox, Webhook, bulk_agents
from api_support import Api
from conftest import ApiServer, free_port
from report_support import snapshot_report
from wait_support import wait_for

from saveos_api.alerts.evaluator import Evaluator

FAST = {
    "alert_evaluate_s": 0.2,
    "alert_outbox_s": 0.1,
    "alert_retry_base_s": 0.3,
    "alert_retry_max_s": 1.0,
    "dashboard_url": "https://saveos.example.com",
}


@pytest.fixture
def mailbox():
    box = Mailbox(free_port()).start()
    yield box
    box.stop()


@pytest.fixture
def webhook():
    hook = Webhook(free_port()).start()
    yield hook
    hook.stop()


def add_channel(api: Api, url: str, **body) -> dict:
    r = api.client.post("/api/v1/alerts/channels", json={"url": url, **body}, headers=api.admin)
    assert r.status_code == 201, r.text
    return r.json()


def healthy_agent(api: Api, name: str, heartbeat_interval_s: int = 5) -> dict[str, str]:
    """An agent that heartbeats and has a good backup: `ok`."""
    _id, headers = api.agent(name, heartbeat_interval_s=heartbeat_interval_s)
    heartbeat(api, headers)
    r = api.client.post("/api/v1/reports/snapshots", json=snapshot_report(), headers=headers)
    assert r.status_code == 201, r.text
    return headers


def heartbeat(api: Api, headers: dict[str, str]) -> None:
    r = api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers)
    assert r.status_code == 200, r.text


def deliveries(api: Api) -> list[dict]:
    r = api.client.get("/api/v1/alerts/deliveries", params={"limit": 1000}, headers=api.admin)
    return r.json()["deliveries"]


def test_silent_then_recovered_arrive_once_by_mail_and_webhook(
    migrated_db_url, tmp_path, mailbox, webhook
):
    api = Api(migrated_db_url, tmp_path / "data", **FAST)
    try:
        add_channel(api, mailbox.url, name="ops mail")
        add_channel(api, webhook.url())
        headers = healthy_agent(api, "web1")
        time.sleep(1.0)  # several passes: `ok` first seen, nothing to say
        assert mailbox.messages == [] and webhook.posts == []

        # No heartbeat for 3 intervals (15 s; 5 s is the shortest interval allowed): silent.
        wait_for(lambda: mailbox.messages and webhook.posts, 30, "the silent notices")
        mail = mailbox.messages[0]
        assert mail["subject"] == "SaveOS: web1 is silent"
        text = mailbox.text(mail)
        post = webhook.posts[0]
        assert post["title"] == "SaveOS: web1 is silent" and post["type"] == "failure"
        for body in (text, post["message"]):
            assert "Host: web1" in body
            assert "Status: silent (was ok)" in body
            assert "Reason: no heartbeat for " in body and "(expected every 5s)" in body
            assert f"Last good backup: {datetime.now(UTC):%Y-%m-%d}" in body
            assert "Dashboard: https://saveos.example.com/hosts/web1" in body

        heartbeat(api, headers)
        wait_for(lambda: len(mailbox.messages) == 2 and len(webhook.posts) == 2, 15, "recovery")
        assert mailbox.messages[1]["subject"] == "SaveOS: web1 recovered (ok)"
        assert webhook.posts[1]["type"] == "success"
        assert "Status: ok (was silent)" in webhook.posts[1]["message"]
        for _ in range(10):  # five more passes, the host heartbeating: nothing new
            heartbeat(api, headers)
            time.sleep(0.1)
        assert len(mailbox.messages) == 2 and len(webhook.posts) == 2

        flips = api.client.get("/api/v1/alerts/flips", headers=api.admin).json()["flips"]
        pairs = [(f["from_status"], f["to_status"]) for f in flips]
        assert pairs[:2] == [("silent", "ok"), ("ok", "silent")]
        assert pairs[2:] in ([], [("never", "ok")])  # a pass between provision and backup
        assert {d["state"] for d in deliveries(api)} == {"sent"}
        metrics = api.client.get("/metrics", headers=api.admin).text
        assert 'saveos_flips_total{to="silent"} 1.0' in metrics
        assert 'saveos_alert_deliveries_total{result="sent"} 4.0' in metrics
    finally:
        api.close()


def test_smtp_down_for_a_while_then_every_message_arrives_once(tmp_path, webhook):
    """Mail waits with retries (the webhook does not wait for it), survives an API restart
    while it waits, and arrives once the SMTP server is back; nothing is sent twice."""
    db = f"sqlite:///{tmp_path / 'saveos.db'}"
    mailbox = Mailbox(free_port())  # not started: the SMTP server is down
    api = Api(db, tmp_path / "data", **FAST)
    try:
        add_channel(api, mailbox.url)
        add_channel(api, webhook.url())
        healthy_agent(api, "db1")
        healthy_agent(api, "db2")
        wait_for(lambda: len(webhook.posts) == 2, 30, "the webhook, while SMTP is down")

        def mail_rows():
            return [d for d in deliveries(api) if d["channel"].startswith("mailto")]

        wait_for(lambda: any(d["attempts"] >= 2 for d in mail_rows()), 15, "mail retries")
        rows = mail_rows()
        assert len(rows) == 2 and {d["state"] for d in rows} <= {"pending", "sending"}
        assert any("connect" in (d["last_error"] or "").lower() for d in rows), rows
    finally:
        api.close()

    # A restart while mail waits: the sent webhooks stay sent, the mail still waits.
    api = Api(db, tmp_path / "data", **FAST)
    try:
        mailbox.start()
        wait_for(lambda: len(mailbox.messages) == 2, 15, "mail after SMTP is back")
        time.sleep(1.5)  # more passes and outbox rounds
        assert sorted(mailbox.subjects()) == ["SaveOS: db1 is silent", "SaveOS: db2 is silent"]
        assert len(webhook.posts) == 2
        assert {d["state"] for d in deliveries(api)} == {"sent"}
    finally:
        api.close()
        mailbox.stop()


def test_evaluators_racing_without_the_lock_still_write_each_flip_once(migrated_pg_url, tmp_path):
    """The conditional UPDATE alone keeps flips single: eight passes at once, lock bypassed."""
    api = Api(migrated_pg_url, tmp_path / "data", alerts_enabled=False)
    try:
        for n in range(20):
            api.agent(f"h{n:02}", heartbeat_interval_s=60)
        settings, db = api.settings, api.app.state.db

        class Unlocked(Evaluator):
            def _exclusive(self, session):
                return True

        now = datetime.now(UTC)
        barrier = threading.Barrier(8)
        results = []

        def race(at):
            barrier.wait()
            results.append(Unlocked(db, settings).run(now=at))

        for at in (now, now + timedelta(seconds=200)):  # first seen `never`, then `silent`
            barrier.reset()
            threads = [threading.Thread(target=race, args=(at,)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert sum(r.flips for r in results) == 40, [r.flips for r in results]
        assert api.count("flips") == 40
        with db.engine.connect() as conn:
            pairs = conn.execute(
                sa.text("SELECT agent_id, to_status, count(*) FROM flips GROUP BY 1, 2")
            ).all()
        assert {count for _a, _s, count in pairs} == {1}
        assert {status for _a, status, _c in pairs} == {"never", "silent"}
    finally:
        api.close()


class Workers(ApiServer):
    """`saveos server --workers N` with extra settings, as a deployment would run it."""

    start_timeout = 90.0  # N processes importing the app on a loaded 2-core machine

    def __init__(self, database_url, data_dir, workers: int, **settings):
        super().__init__(database_url, data_dir)
        self.extra = {"SAVEOS_WORKERS": str(workers)}
        self.extra.update({f"SAVEOS_{k.upper()}": str(v) for k, v in settings.items()})

    @property
    def env(self):
        return {**super().env, **self.extra}


@pytest.mark.pg
def test_two_api_workers_on_postgresql_notify_once(migrated_pg_url, tmp_path, mailbox, webhook):
    import httpx

    server = Workers(migrated_pg_url, tmp_path / "api", 2, **FAST).start()
    try:
        http = httpx.Client(base_url=server.url, headers=server.admin_headers(), timeout=10)
        for url in (mailbox.url, webhook.url()):
            assert http.post("/api/v1/alerts/channels", json={"url": url}).status_code == 201
        names = [f"w{n}" for n in range(3)]
        tokens = {}
        for name in names:
            out = http.post(
                "/api/v1/agents/provision", json={"name": name, "heartbeat_interval_s": 5}
            ).json()
            tokens[name] = {"Authorization": f"Bearer {out['token']}"}
            httpx.post(server.url + "/api/v1/agents/heartbeat", json={}, headers=tokens[name])
            r = httpx.post(
                server.url + "/api/v1/reports/snapshots",
                json=snapshot_report(),
                headers=tokens[name],
            )
            assert r.status_code == 201, r.text
        wait_for(lambda: len(mailbox.messages) >= 3 and len(webhook.posts) >= 3, 35, "silent")
        for name in names:
            httpx.post(server.url + "/api/v1/agents/heartbeat", json={}, headers=tokens[name])
        wait_for(lambda: len(mailbox.messages) >= 6 and len(webhook.posts) >= 6, 20, "recovery")
        for _ in range(10):  # ten more passes in each worker, the hosts heartbeating
            for name in names:
                httpx.post(server.url + "/api/v1/agents/heartbeat", json={}, headers=tokens[name])
            time.sleep(0.2)
        for titles in (mailbox.subjects(), webhook.titles()):
            assert sorted(titles) == sorted(
                [f"SaveOS: {n} is silent" for n in names]
                + [f"SaveOS: {n} recovered (ok)" for n in names]
            )
        log = server.log_path.read_text()
        assert log.count("Application startup complete.") == 2  # both workers evaluate
        assert mailbox.url.split("?")[0].split("//")[1] not in log
        http.close()
    finally:
        server.stop()


def test_flood_of_1000_hosts_turning_late_is_one_message_per_channel(
    migrated_db_url, tmp_path, webhook
):
    settings = dict(FAST, alert_evaluate_s=0.5, alert_digest_period_s=4, alert_burst=10)
    api = Api(migrated_db_url, tmp_path / "data", **settings)
    try:
        add_channel(api, webhook.url("/each"), min_status="late")
        add_channel(api, webhook.url("/overdue"), min_status="overdue")
        add_channel(api, webhook.url("/digest"), min_status="late", digest=True)
        late_at = datetime.now(UTC) + timedelta(seconds=3)
        bulk_agents(api.app.state.db, 1000, late_at)

        def at(path):
            return [p for p in webhook.posts if p["path"] == path]

        wait_for(lambda: at("/each"), 30, "the summary")
        took = (datetime.now(UTC) - late_at).total_seconds()
        assert at("/each")[0]["title"] == "SaveOS: 1000 hosts changed status (1000 late)"
        assert "Now late (1000): flood0000, flood0001" in at("/each")[0]["message"]
        assert "and 980 more" in at("/each")[0]["message"]
        wait_for(
            lambda: any("1000 host(s) need attention" in p["title"] for p in at("/digest")),
            20,
            "a digest naming the late hosts",
        )
        time.sleep(1.0)
        assert len(at("/each")) == 1
        assert at("/overdue") == []  # late is below its floor
        assert all(p["title"].startswith("SaveOS digest") for p in at("/digest"))
        assert api.count("flips") == 2000  # first seen ok, then late: one each
        print(
            f"flood: 1000 hosts late -> 1 summary after {took:.1f}s, digests {len(at('/digest'))}"
        )
        assert took < 10
    finally:
        api.close()


def test_routing_by_labels_groups_and_min_status(migrated_sqlite_url, tmp_path):
    api = Api(migrated_sqlite_url, tmp_path / "data", alerts_enabled=False)
    try:
        db_team = add_channel(api, "json://127.0.0.1:9/db", labels={"team": "db"})
        web = add_channel(api, "json://127.0.0.1:9/web", labels={"group": "web"}, min_status="late")
        everyone = add_channel(api, "json://127.0.0.1:9/all", min_status="failing")
        t0 = datetime.now(UTC)
        for name, labels in (("a-db", {"team": "db"}), ("b-web", {"groups": "prod,web"})):
            _id, headers = api.agent(
                name, labels=labels, heartbeat_interval_s=86400, backup_interval_s=3600
            )
            heartbeat(api, headers)
            report = snapshot_report(finished=t0)
            assert api.client.post("/api/v1/reports/snapshots", json=report, headers=headers)
        evaluator = Evaluator(api.app.state.db, api.settings)
        evaluator.run(now=t0 + timedelta(seconds=1))  # first seen ok
        evaluator.run(now=t0 + timedelta(seconds=3601))  # late
        evaluator.run(now=t0 + timedelta(seconds=3600 + 3601))  # overdue (grace 3600)
        got = {(d["channel_id"], d["title"]) for d in deliveries(api)}
        assert got == {
            (web["id"], "SaveOS: b-web is late"),
            (web["id"], "SaveOS: b-web is overdue"),
            (db_team["id"], "SaveOS: a-db is overdue"),
        }
        assert everyone["id"] not in {c for c, _t in got}
    finally:
        api.close()


def test_repeat_interval_and_daily_digest(migrated_sqlite_url, tmp_path):
    t0 = datetime.now(UTC)
    api = Api(
        migrated_sqlite_url,
        tmp_path / "data",
        alerts_enabled=False,
        alert_repeat_s=100,
        alert_digest_period_s=86400,
        alert_digest_offset_s=(int(t0.timestamp()) + 3600) % 86400,  # the day starts at t0+1h
    )
    try:
        each = add_channel(api, "json://127.0.0.1:9/each")
        digest = add_channel(api, "json://127.0.0.1:9/digest", digest=True)
        _id, headers = api.agent("r1", heartbeat_interval_s=60)
        heartbeat(api, headers)
        evaluator = Evaluator(api.app.state.db, api.settings)
        for offset in (0, 200, 250, 301, 350, 402, 3600):  # silent from 180 s on
            evaluator.run(now=t0 + timedelta(seconds=offset))
        rows = sorted(deliveries(api), key=lambda d: d["id"])
        kinds = [(d["channel_id"], d["kind"], d["title"]) for d in rows]
        assert kinds == [
            (each["id"], "flip", "SaveOS: r1 is silent"),  # at 200
            (each["id"], "repeat", "SaveOS: r1 is still silent"),  # 301: 101 s later
            (each["id"], "repeat", "SaveOS: r1 is still silent"),  # 402
            (each["id"], "repeat", "SaveOS: r1 is still silent"),  # 3600
            (digest["id"], "digest", "SaveOS digest: 1 host(s) need attention"),  # the new day
        ]
        assert all(d["state"] == "pending" for d in rows)  # no worker ran: nothing sent
    finally:
        api.close()


def test_bad_channel_urls_are_refused_with_a_clear_message(migrated_sqlite_url, tmp_path):
    api = Api(migrated_sqlite_url, tmp_path / "data", alerts_enabled=False)
    try:
        cases = {
            "bogus://x": "unknown notification scheme 'bogus'",
            "hooks.example.com/abc": "the channel URL has no scheme",
            "mailto://user:hunter22@smtp.example.com?mode=nonsense": "The secure mode specified",
            "   ": "the channel URL is empty",
        }
        for url, message in cases.items():
            r = api.client.post("/api/v1/alerts/channels", json={"url": url}, headers=api.admin)
            assert r.status_code == 422, (url, r.text)
            assert message in r.json()["detail"], (url, r.text)
            assert "hunter22" not in r.text
        r = api.client.post(
            "/api/v1/alerts/channels",
            json={"url": "json://127.0.0.1:9/x", "min_status": "meh"},
            headers=api.admin,
        )
        assert r.status_code == 422 and "min status 'meh'" in r.json()["detail"]
        assert api.count("alert_channels") == 0
    finally:
        api.close()


def test_channel_urls_are_sealed_at_rest_and_shown_redacted(migrated_sqlite_url, tmp_path):
    api = Api(migrated_sqlite_url, tmp_path / "data", alerts_enabled=False)
    secret = "tok-" + uuid.uuid4().hex
    url = f"json://127.0.0.1:9/hooks/{secret}?x-key={secret}"
    try:
        channel = add_channel(api, url)
        assert channel["url"] == "json://127.0.0.1:9/…"
        again = api.client.post("/api/v1/alerts/channels", json={"url": url}, headers=api.admin)
        assert again.status_code == 409 and secret not in again.text
        raw = (tmp_path / "saveos.db").read_bytes()
        assert secret.encode() not in raw and b"127.0.0.1:9" not in raw.replace(
            "json://127.0.0.1:9/…".encode(), b""
        )
        listed = api.client.get("/api/v1/alerts/channels", headers=api.admin).text
        assert secret not in listed
        # The test send fails (nothing listens on port 9): the error names no secret either.
        r = api.client.post("/api/v1/alerts/test", json={}, headers=api.admin)
        result = r.json()["results"][0]
        assert result["ok"] is False and result["error"] and secret not in r.text
    finally:
        api.close()


def test_channels_declared_in_settings_are_synced(migrated_sqlite_url, tmp_path, webhook):
    import json

    declared = json.dumps(
        [webhook.url("/a"), {"url": webhook.url("/b"), "labels": {"team": "db"}, "digest": True}]
    )
    api = Api(migrated_sqlite_url, tmp_path / "data", alert_channels=declared, **FAST)
    try:
        channels = api.client.get("/api/v1/alerts/channels", headers=api.admin).json()["channels"]
        assert [(c["source"], c["labels"], c["digest"]) for c in channels] == [
            ("settings", {}, False),
            ("settings", {"team": "db"}, True),
        ]
        r = api.client.delete(f"/api/v1/alerts/channels/{channels[0]['id']}", headers=api.admin)
        assert r.status_code == 409 and "SAVEOS_ALERT_CHANNELS" in r.text
        r = api.client.post("/api/v1/alerts/test", json={}, headers=api.admin)
        assert [x["ok"] for x in r.json()["results"]] == [True, True]
        assert sorted(p["path"] for p in webhook.posts) == ["/a", "/b"]
    finally:
        api.close()
    # Dropped from the settings: disabled, kept with its history.
    api = Api(
        migrated_sqlite_url, tmp_path / "data", alert_channels=json.dumps([webhook.url("/a")])
    )
    try:
        channels = api.client.get("/api/v1/alerts/channels", headers=api.admin).json()["channels"]
        assert [c["disabled_at"] is None for c in channels] == [True, False]
    finally:
        api.close()


@pytest.mark.pg
def test_deadman_pings_only_while_the_evaluator_runs_and_the_database_answers(pg_url, tmp_path):
    from conftest import _pg_exec

    pings = Webhook(free_port())
    hits: list[float] = []

    def count_get(handler):
        hits.append(time.monotonic())
        handler.send_response(200)
        handler.send_header("content-length", "0")
        handler.end_headers()

    pings.server.RequestHandlerClass.do_GET = count_get
    pings.start()
    name = pg_url.rsplit("/", 1)[1]
    api = Api(
        pg_url,
        tmp_path / "data",
        alert_evaluate_s=0.1,
        deadman_url=f"http://127.0.0.1:{pings.port}/ping/uuid",
        deadman_interval_s=0.2,
    )
    try:
        wait_for(lambda: len(hits) >= 3, 10, "dead-man pings")
        _pg_exec(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        _pg_exec(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        time.sleep(0.5)
        before = len(hits)
        time.sleep(1.5)
        assert len(hits) == before, "pinged while the database was gone"
        _pg_exec(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        wait_for(lambda: len(hits) >= before + 2, 15, "pings again once the database is back")
    finally:
        _pg_exec(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        api.close()
        pings.stop()


def saveos(server: ApiServer, *args: str, stdin: str | None = None):
    env = dict(server.env, SAVEOS_API_URL=server.url, COLUMNS="200")
    return cli_support.saveos(*args, env=env, stdin=stdin, timeout=60)


def test_cli_channels_test_and_list(tmp_path, webhook):
    secret = "tok-" + uuid.uuid4().hex
    server = Workers(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "api", 1, **FAST).start()
    try:
        added = saveos(
            server,
            "alerts", "channel", "add", "-", "--label", "team=db", "--min-status", "late",
            "--name", "db team",
            stdin=webhook.url(f"/hook/{secret}") + "\n",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert "added channel 1: db team (late and worse, hosts: team=db)" in added.stdout
        dead = saveos(server, "alerts", "channel", "add", stdin=f"json://127.0.0.1:9/{secret}\n")
        assert dead.returncode == 0, dead.stderr

        listed = saveos(server, "alerts", "channel", "list", "--json")
        channels = json.loads(listed.stdout)["channels"]
        assert [c["url"] for c in channels] == [
            f"json://127.0.0.1:{webhook.port}/…",
            "json://127.0.0.1:9/…",
        ]
        table = saveos(server, "alerts", "channel", "list")
        assert "db team" in table.stdout and "team=db" in table.stdout

        tested = saveos(server, "alerts", "test")
        assert tested.returncode == 1, tested.stdout + tested.stderr
        assert "sent to db team" in tested.stdout
        assert "failed json://127.0.0.1:9/…: " in tested.stdout
        assert [p["title"] for p in webhook.posts] == ["SaveOS test notification"]
        only = saveos(server, "alerts", "test", "--channel", "1")
        assert only.returncode == 0 and len(webhook.posts) == 2

        for url, message in (
            ("bogus://x", "unknown notification scheme 'bogus'"),
            ("no-scheme", "the channel URL has no scheme"),
        ):
            bad = saveos(server, "alerts", "channel", "add", "-", stdin=url + "\n")
            assert bad.returncode == 1 and message in bad.stderr, bad.stderr
            assert "Traceback" not in bad.stderr
        label = saveos(server, "alerts", "channel", "add", "-", "--label", "x", stdin="json://h/\n")
        assert label.returncode == 1 and "label 'x' is not KEY=VALUE" in label.stderr

        listing = saveos(server, "alerts", "list", "--json")
        doc = json.loads(listing.stdout)
        assert doc["flips"] == [] and {d["kind"] for d in doc["deliveries"]} == {"test"}
        assert "last 3 delivery(ies)" in saveos(server, "alerts", "list").stdout

        removed = saveos(server, "alerts", "channel", "remove", "2")
        assert removed.returncode == 0 and "removed channel 2." in removed.stdout
        again = saveos(server, "alerts", "channel", "remove", "2")
        assert again.returncode == 1 and "channel 2 not found" in again.stderr

        everything = [added, dead, listed, table, tested, only, listing, removed]
        for result in everything:
            assert secret not in result.stdout + result.stderr
        assert secret not in server.log_path.read_text()
    finally:
        server.stop()


def test_server_refuses_to_start_with_a_bad_declared_channel(tmp_path):
    server = Workers(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "api", 1)
    channels = tmp_path / "channels.txt"
    channels.write_text("# ops\njson://127.0.0.1:9/ok\nbogus://x\n")
    channels.chmod(0o644)
    cases = [
        ({"SAVEOS_ALERT_CHANNELS": '[{"url": "json://h/", "min_status": "meh"}]'},
         "SAVEOS_ALERT_CHANNELS: channel 1: min status 'meh'"),
        ({"SAVEOS_ALERT_CHANNELS_FILE": str(channels)}, "is accessible by group/others"),
    ]  # fmt: skip
    for env, message in cases:
        server.extra = env
        started = saveos(server, "server", "--port", str(free_port()))
        assert started.returncode == 1 and message in started.stderr, started.stderr
        assert "Traceback" not in started.stderr
    channels.chmod(0o600)
    server.extra = {"SAVEOS_ALERT_CHANNELS_FILE": str(channels)}
    started = saveos(server, "server", "--port", str(free_port()))
    assert started.returncode == 1
    assert f"{channels}: channel 2: unknown notification scheme 'bogus'" in started.stderr


def test_after_an_outage_of_saveos_itself_hosts_get_time_to_report_before_silent(
    sqlite_url, tmp_path
):
    """Every host looks silent to an API that was down; it says so only if a host stays
    unheard for the silent window after the API is back."""
    api = Api(sqlite_url, tmp_path / "data", alerts_enabled=False)
    try:
        add_channel(api, "json://127.0.0.1:9/all")
        _id, headers = api.agent("quiet", heartbeat_interval_s=60)
        heartbeat(api, headers)
        t0 = datetime.now(UTC)
        evaluator = Evaluator(api.app.state.db, api.settings)
        evaluator.run(now=t0)  # first seen: never
        evaluator.started = t0 + timedelta(seconds=1000)  # back after a 1000 s outage
        for offset in (1001, 1100, 1179):  # silent by the clock, but not yet given the time
            assert evaluator.run(now=t0 + timedelta(seconds=offset)).flips == 0
        assert evaluator.run(now=t0 + timedelta(seconds=1181)).flips == 1
        assert [d["title"] for d in deliveries(api)] == ["SaveOS: quiet is silent"]
    finally:
        api.close()


def test_a_message_no_channel_takes_is_given_up_after_the_give_up_time(
    migrated_sqlite_url, tmp_path
):
    api = Api(migrated_sqlite_url, tmp_path / "data", **dict(FAST, alert_give_up_s=1.0))
    try:
        add_channel(api, f"json://127.0.0.1:{free_port()}/nobody")  # nothing listens there
        healthy_agent(api, "gone")
        wait_for(lambda: [d for d in deliveries(api) if d["state"] == "dead"], 20, "given up")
        (row,) = deliveries(api)
        assert row["attempts"] >= 2 and "127.0.0.1" in row["last_error"]
        assert (
            'saveos_alert_deliveries_total{result="dead"} 1.0'
            in api.client.get("/metrics", headers=api.admin).text
        )
    finally:
        api.close()


def test_test_send_answers_in_time_when_a_channel_never_answers(
    migrated_sqlite_url, tmp_path, webhook
):
    import socket

    silent = socket.socket()  # accepts connections (the backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    api = Api(migrated_sqlite_url, tmp_path / "data", alerts_enabled=False)
    try:
        add_channel(api, f"json://127.0.0.1:{silent.getsockname()[1]}/mute?rto=60")
        add_channel(api, f"json://127.0.0.1:{silent.getsockname()[1]}/mute2?rto=60")
        add_channel(api, webhook.url())
        started = time.monotonic()
        r = api.client.post("/api/v1/alerts/test", json={}, headers=api.admin)
        took = time.monotonic() - started
        assert [x["ok"] for x in r.json()["results"]] == [False, False, True], r.text
        assert took < 14, took  # both mute channels waited out together, under the CLI's 15 s
        assert len(webhook.posts) == 1
    finally:
        api.close()
        silent.close()


def test_the_reason_details_the_headline_and_keeps_the_status_rules_other_findings():
    from saveos_api.alerts.messages import reason

    now = datetime.now(UTC)
    base = {"heartbeat_interval_s": 60, "backup_interval_s": 86400, "backup_grace_s": 3600}
    silent = dict(
        base,
        status="silent",
        last_heartbeat=now,
        last_heartbeat_age_s=200.0,
        reasons=["no heartbeat", "last said running: backup (job 3) since 10:02"],
    )
    assert reason(silent, now) == (
        "no heartbeat for 3m20s (expected every 1m); last said running: backup (job 3) since 10:02"
    )
    late_check = dict(base, status="late", last_backup_age_s=60.0, reasons=["stale check"])
    assert reason(late_check, now) == "stale check"
    late = dict(
        base,
        status="overdue",
        last_backup_age_s=95000.0,
        reasons=["late backup (overdue)", "stale drill"],
    )
    assert reason(late, now) == "last good backup 1d2h ago (every 1d, grace 1h); stale drill"
    # Which of the backup or the offsite copy fell behind is status.assess()'s finding, not
    # worked out again here from the ages (a backup 2 h old can be behind a 1 h schedule).
    offsite = dict(base, status="overdue", offsite_interval_s=86400, last_backup_age_s=60.0)
    assert reason(dict(offsite, reasons=["stale offsite copy (overdue)"]), now) == (
        "stale offsite copy (overdue)"
    )
    both = dict(offsite, reasons=["stale backup (overdue)", "stale offsite copy (overdue)"])
    assert reason(both, now).startswith("last good backup 1m ago")
    tampered = dict(base, status="tampered", reasons=["repository tampered with"])
    assert reason(tampered, now) == "a central run found the repository tampered with"
