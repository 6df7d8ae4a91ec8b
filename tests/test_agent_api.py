"""The agent against the real API (uvicorn + SQLite): reports never lost, never duplicated; jobs."""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest
import sqlalchemy as sa
from agent_support import AgentHost, make_tree, write_private
from conftest import ApiServer, free_port
from wait_support import wait_for

pytestmark = pytest.mark.borg


def _provision(server: ApiServer, name: str) -> tuple[int, str]:
    resp = httpx.post(
        server.url + "/api/v1/agents/provision",
        json={"name": name, "backup_interval_s": 3600, "heartbeat_interval_s": 60},
        headers=server.admin_headers(),
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["id"], body["token"]


def _snapshots(server: ApiServer, agent_id: int) -> dict:
    resp = httpx.get(
        f"{server.url}/api/v1/agents/{agent_id}/snapshots?limit=50",
        headers=server.admin_headers(),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def _host(tmp_path, pyz, server_url: str, agent_id: int, token: str) -> AgentHost:
    token_file = write_private(tmp_path / "etc" / "token", token + "\n")
    host = AgentHost(
        tmp_path, pyz, api_url=server_url, agent_id=agent_id, token_file=str(token_file)
    )
    make_tree(host.src)
    host.init()
    return host


def _host_of_a_stopped_api(tmp_path, pyz, name: str) -> tuple[str, int, int, AgentHost]:
    """A host provisioned by an API on SQLite that is stopped at once: (its database URL and
    port, to start it again, the agent id, the host)."""
    db_url = f"sqlite:///{tmp_path / 'api.db'}"
    port = free_port()
    server = ApiServer(db_url, tmp_path / "api", port=port).start()
    try:
        agent_id, token = _provision(server, name)
    finally:
        server.stop()
    return db_url, port, agent_id, _host(tmp_path / "host", pyz, server.url, agent_id, token)


def test_api_outage_three_backups_then_flush_gives_exactly_three_snapshots(tmp_path, agent_pyz):
    db_url, port, agent_id, host = _host_of_a_stopped_api(tmp_path, agent_pyz, "spool-host")

    archives = []
    for _ in range(3):
        rc, result = host.json("backup")
        assert rc == 0, result
        assert result["reported"] is False
        archives.append(result["archive"])
    spool_dir = host.root / "spool"
    spooled = sorted(spool_dir.glob("*.json"))
    assert len(spooled) == 3
    replay = tmp_path / "replay.json"
    shutil.copy(spooled[0], replay)  # a report the agent will send a second time
    rc, status = host.json("status")
    assert status["spool_depth"] == 3
    rc, flushed = host.json("spool", "flush")
    assert rc == 1 and flushed["remaining"] == 3 and flushed["sent"] == 0
    assert flushed["error"]

    server = ApiServer(db_url, tmp_path / "api", port=port).start()  # same DB, same secret
    try:
        rc, flushed = host.json("spool", "flush")
        assert rc == 0, flushed
        assert flushed == {
            "status": "ok",
            "sent": 3,
            "rejected": 0,
            "remaining": 0,
            "error": None,
        }
        snaps = _snapshots(server, agent_id)
        assert snaps["total"] == 3
        assert sorted(s["archive"] for s in snaps["snapshots"]) == sorted(archives)
        assert all(s["exit_status"] == "ok" and s["nfiles"] == 24 for s in snaps["snapshots"])
        # The agent names its repository `repository.url`; answered also as deprecated `repo`.
        assert {(s["repository"], s["repo"]) for s in snaps["snapshots"]} == {(str(host.repo),) * 2}

        # a replayed report (same report_id) is accepted as a duplicate and writes nothing
        shutil.copy(replay, spool_dir / f"{time.time_ns():020d}-replay.json")
        rc, flushed = host.json("spool", "flush")
        assert rc == 0 and flushed["sent"] == 1 and flushed["remaining"] == 0
        assert _snapshots(server, agent_id)["total"] == 3

        # with the API up, a backup reports at once
        rc, result = host.json("backup")
        assert rc == 0 and result["reported"] is True
        assert not list(spool_dir.glob("*.json"))
        assert _snapshots(server, agent_id)["total"] == 4
    finally:
        server.stop()


def test_heartbeat_runs_queued_jobs_and_posts_results(tmp_path, agent_pyz):
    server = ApiServer(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "api").start()
    try:
        agent_id, token = _provision(server, "job-host")
        host = _host(tmp_path / "host", agent_pyz, server.url, agent_id, token)
        rc, beat = host.json("heartbeat")
        assert rc == 0 and beat["agent_id"] == agent_id and beat["jobs"] == []
        agent = httpx.get(
            f"{server.url}/api/v1/agents/{agent_id}", headers=server.admin_headers(), timeout=10
        ).json()
        assert agent["borg_version"].startswith("1.") and agent["agent_version"]

        resp = httpx.post(
            server.url + "/api/v1/jobs",
            json={"kind": "backup", "agents": ["job-host"], "requested_by": "test"},
            headers=server.admin_headers(),
            timeout=10,
        )
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["jobs"][0]["id"]
        rc, beat = host.json("heartbeat")
        assert rc == 0, beat
        assert [(j["id"], j["kind"], j["state"]) for j in beat["jobs"]] == [
            (job_id, "backup", "succeeded")
        ]
        job = httpx.get(
            f"{server.url}/api/v1/jobs/{job_id}", headers=server.admin_headers(), timeout=10
        ).json()
        assert job["state"] == "succeeded"
        assert job["result"]["archive"] == beat["jobs"][0]["result"]["archive"]
        assert _snapshots(server, agent_id)["total"] == 1

        resp = httpx.post(
            server.url + "/api/v1/jobs",
            json={"kind": "drill", "agents": [agent_id], "params": {"count": 3}},
            headers=server.admin_headers(),
            timeout=10,
        )
        drill_job = resp.json()["jobs"][0]["id"]
        rc, beat = host.json("heartbeat")
        assert beat["jobs"][0]["state"] == "succeeded"
        assert beat["jobs"][0]["result"]["files_checked"] == 3
        fleet = httpx.get(
            server.url + "/api/v1/fleet/status", headers=server.admin_headers(), timeout=10
        ).json()
        mine = next(a for a in fleet["agents"] if a["id"] == agent_id)
        assert mine["last_drill_result"] == "pass" and mine["status"] == "ok"
        job = httpx.get(
            f"{server.url}/api/v1/jobs/{drill_job}", headers=server.admin_headers(), timeout=10
        ).json()
        assert job["state"] == "succeeded"

        # a revoked token: clear error, exit 2, and the token never printed
        httpx.post(
            f"{server.url}/api/v1/agents/{agent_id}/tokens/revoke",
            headers=server.admin_headers(),
            timeout=10,
        )
        proc = host.run("heartbeat")
        assert proc.returncode == 2 and "401" in proc.stderr
        assert token not in proc.stderr + proc.stdout
        assert token not in host.log_file.read_text()
    finally:
        server.stop()


def test_token_file_readable_by_others_is_refused(tmp_path, agent_pyz):
    token_file = write_private(tmp_path / "token", "sos_" + "x" * 43)
    os.chmod(token_file, 0o644)
    host = AgentHost(tmp_path, agent_pyz, api_url="http://127.0.0.1:9", token_file=str(token_file))
    proc = host.run("status")
    assert proc.returncode == 2 and "token_file" in proc.stderr and "chmod 600" in proc.stderr
    data = json.loads(host.run("status", "--json").stdout)
    assert data["status"] == "error"


def _wait(predicate, timeout: float = 90, what: str = "condition") -> None:
    wait_for(predicate, timeout, what, interval=0.2)


def test_daemon_survives_an_api_outage_then_delivers_and_runs_jobs(tmp_path, agent_pyz):
    import signal

    db_url, port, agent_id, host = _host_of_a_stopped_api(tmp_path, agent_pyz, "daemon-host")
    host.write_config(schedule={"backup_interval_s": 3600, "heartbeat_interval_s": 5})
    spool_dir = host.root / "spool"
    daemon = host.popen("daemon")
    server = None
    try:
        _wait(lambda: len(list(spool_dir.glob("*.json"))) == 1, what="a spooled snapshot")
        time.sleep(2)  # a few failed heartbeats later
        assert daemon.poll() is None, "daemon died while the API was down"
        server = ApiServer(db_url, tmp_path / "api", port=port).start()
        _wait(lambda: not list(spool_dir.glob("*.json")), what="the spool to drain")
        assert _snapshots(server, agent_id)["total"] == 1
        resp = httpx.post(
            server.url + "/api/v1/jobs",
            json={"kind": "check", "agents": [agent_id]},
            headers=server.admin_headers(),
            timeout=10,
        )
        job_id = resp.json()["jobs"][0]["id"]

        def job_state():
            return httpx.get(
                f"{server.url}/api/v1/jobs/{job_id}", headers=server.admin_headers(), timeout=10
            ).json()["state"]

        _wait(lambda: job_state() == "succeeded", what="the check job")
        # The agent names the checked repository `repository.url`: stored, not refused.
        engine = sa.create_engine(db_url)
        try:
            with engine.connect() as conn:
                checked = conn.execute(sa.text("SELECT repository FROM check_results")).all()
        finally:
            engine.dispose()
        assert checked == [(str(host.repo),)]
        agent = httpx.get(
            f"{server.url}/api/v1/agents/{agent_id}", headers=server.admin_headers(), timeout=10
        ).json()
        assert agent["last_heartbeat"] and agent["last_seen"] == agent["last_heartbeat"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
        if server:
            server.stop()
    assert daemon.returncode == 0


def test_jobs_unit_stays_for_the_next_click_of_the_archive_browser(
    tmp_path, agent_pyz, monkeypatch
):
    """systemd hosts run jobs in saveos-agent-jobs.service (`run-jobs`), started by the timer's
    heartbeat. After a `list` job it heartbeats on its own for the interactive window, so the
    archive browser's next folder does not wait for the timer's next tick; after the window
    nothing picks a job up until a heartbeat does. The agent code in process (the unit's own
    entry point), against a real API and real borg."""
    import threading

    from saveos_agent import config as agent_config
    from saveos_agent.actions import heartbeat, jobs

    server = ApiServer(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "api").start()
    try:
        agent_id, token = _provision(server, "browse-host")
        host = _host(tmp_path / "host", agent_pyz, server.url, agent_id, token)
        rc, made = host.json("backup")
        assert rc == 0, made
        monkeypatch.setenv("BORG_BASE_DIR", str(host.root / "borgbase"))
        monkeypatch.setattr(jobs, "INTERACTIVE_S", 30.0)
        monkeypatch.setattr(jobs, "INTERACTIVE_BEAT_S", 0.5)
        cfg = agent_config.load(str(host.config_path))
        admin = server.admin_headers()

        def queue(path: str) -> int:
            body = {"kind": "list", "agents": ["browse-host"], "requested_by": "test",
                    "params": {"archive": made["archive"], "path": path}}  # fmt: skip
            r = httpx.post(server.url + "/api/v1/jobs", json=body, headers=admin, timeout=10)
            assert r.status_code == 201, r.text
            return r.json()["jobs"][0]["id"]

        def state(job_id: int) -> str:
            url = f"{server.url}/api/v1/jobs/{job_id}"
            return httpx.get(url, headers=admin, timeout=10).json()["state"]

        first = queue("")
        beat = heartbeat.heartbeat(cfg, queue_only=True)  # what the timer's heartbeat hands over
        assert [j["id"] for j in beat["jobs"]] == [first]
        out: dict = {}
        unit = threading.Thread(target=lambda: out.update(jobs.run_jobs(cfg, True)))
        unit.start()
        _wait(lambda: state(first) == "succeeded", what="the first listing")
        second = queue(str(host.src).lstrip("/"))  # the next click: no heartbeat is due
        _wait(lambda: state(second) == "succeeded", what="the next folder, while the unit stays")
        unit.join(timeout=60)
        assert not unit.is_alive(), "the jobs unit did not leave after the interactive window"
        assert [j["id"] for j in out["jobs"]] == [first, second]
        third = queue("")  # after the window: it waits for a heartbeat, as any job does
        time.sleep(2)
        assert state(third) == "queued"
    finally:
        server.stop()
