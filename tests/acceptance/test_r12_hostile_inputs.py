"""R12 hostile inputs to the control plane: each refused or harmless, with figures.

- the restore-injection job (a path that borg would read as --debug-profile=FILE): refused by
  the API (422, no job), and, written straight into the database as an attacker with the
  database or the network path would, refused by the agent (job failed, no file written);
- the self-silencing heartbeat (366-day intervals, then silence): the host still goes silent
  on the provisioned clock;
- agent text with Rich markup and terminal escapes: `saveos status` exits 2 with the alarm, and
  no escape reaches the terminal;
- a chunked body of 64 MiB beside `Content-Length: 10`: refused after the limit;
- a report flood (backdated, 64 KB of text each): refused past the agent's bound, with the
  stored size that costs;
(another agent's id in uninstall: tests/test_role.py, the fleet lifecycle.)
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from report_support import report_id, snapshot_report

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]
DEBUG_PROFILE = "/var/tmp/saveos-r12-profile"
INJECTED = ["srv/accept/host", f"--debug-profile={DEBUG_PROFILE}"]


def _client(fleet) -> httpx.Client:
    return httpx.Client(base_url=fleet.api.url, timeout=30, verify=fleet.api.server.verify)


def test_r12_restore_injection_is_refused_by_the_api_and_by_the_agent(fleet, figures):
    ids = fleet.agent_ids()
    params = {"archive": "latest", "paths": INJECTED, "target": "/var/tmp/r12-restore"}
    with _client(fleet) as http:
        r = http.post(
            "/api/v1/jobs",
            json={"kind": "restore", "agents": ["lab1"], "params": params},
            headers=fleet.api.admin,
        )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "params", "paths[1]"]
    # As an attacker who can write the jobs table (or the heartbeat answer) would hand it out.
    with fleet.api.rows.engine.begin() as conn:
        job_id = conn.execute(
            sa.text(
                "INSERT INTO jobs (agent_id, kind, state, params, created_at) VALUES "
                "(:a, 'restore', 'queued', CAST(:p AS json), now()) RETURNING id"
            ),
            {"a": ids["lab1"], "p": json.dumps(params)},
        ).scalar_one()
    fleet.sh("lab1", f"rm -rf {DEBUG_PROFILE} /var/tmp/r12-restore")
    # Whoever heartbeats first (this call or the host's daemon) takes the job and runs it.
    fleet.agent("lab1", "heartbeat")
    deadline = time.monotonic() + 120
    while True:
        with fleet.api.rows.engine.connect() as conn:
            job = conn.execute(
                sa.text("SELECT state, result FROM jobs WHERE id = :id"), {"id": job_id}
            ).one()
        if job.state not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert job.state == "failed", job
    assert "starts with '-'" in job.result["message"], job.result
    leftover = fleet.sh("lab1", f"ls {DEBUG_PROFILE} /var/tmp/r12-restore 2>&1")
    assert leftover.stdout.count("No such file or directory") == 2, leftover.stdout
    figures.append(
        "R12 restore injection (path --debug-profile=FILE): API 422 and no job; the same job"
        " forced into the database: the agent refused it (failed), no file written, borg not run"
    )


def test_r12_a_self_silencing_heartbeat_leaves_the_alarm_on(fleet, figures):
    token = fleet.sh("lab2", "cat /etc/saveos/token").stdout.strip()
    year = 366 * 86400
    with _client(fleet) as http:
        r = http.post(
            "/api/v1/agents/heartbeat",
            json={"backup_interval_s": year, "heartbeat_interval_s": year},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200
        later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
        fleet_status = http.get(
            "/api/v1/fleet/status", params={"at": later}, headers=fleet.api.admin
        ).json()
    row = next(a for a in fleet_status["agents"] if a["name"] == "lab2")
    assert row["status"] == "silent" and row["schedule_mismatch"] is True
    assert row["heartbeat_interval_s"] == 5  # the provisioned one (conftest's inventory)
    # The host's next real heartbeat declares its real schedule again.
    assert fleet.agent("lab2", "heartbeat")[0] == 0
    figures.append(
        f"R12 self-silencing heartbeat (declared {year} s intervals): kept provisioned"
        f" {row['heartbeat_interval_s']} s; silent 10 min later, schedule_mismatch shown"
    )


def test_r12_markup_and_escapes_in_agent_text_are_shown_as_text(fleet, figures):
    token = fleet.sh("lab3", "cat /etc/saveos/token").stdout.strip()
    nasty = "[/bold]\x1b[2J\x1b]0;owned\x07[link=file:///etc]x"
    body = snapshot_report(datetime.now(UTC), status="error", archive=nasty, message=nasty)
    with _client(fleet) as http:
        r = http.post(
            "/api/v1/reports/snapshots", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 201, r.text
    try:
        shown = fleet.saveos("status")
        assert shown.returncode == 2, shown.stdout + shown.stderr  # the alarm, not a crash
        assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
        assert "needs attention" in shown.stdout and "lab3" in shown.stdout
    finally:  # a real backup: lab3's latest snapshot is ok again for the next cases
        rc, out = fleet.agent("lab3", "backup")
        assert rc == 0, out
    figures.append(
        "R12 agent text with markup and escapes ([/bold], ESC[2J, OSC title): saveos status"
        " exit 2 with the alarm, 0 escape bytes on the terminal"
    )


def test_r12_an_oversized_chunked_body_and_a_report_flood(api_pg, figures):
    host, port = "127.0.0.1", api_pg.server.port
    conn = socket.create_connection((host, port), timeout=10)
    conn.sendall(
        b"POST /api/v1/agents/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    )
    sent, chunk = 0, b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
    started = time.monotonic()
    try:
        while sent < 64 << 20:
            conn.sendall(chunk)
            sent += 65536
            if sent >= 4 << 20:
                break  # the answer is due long before
    except OSError:
        pass
    conn.settimeout(5)
    try:
        answer = conn.recv(200)
    except OSError:
        answer = b""
    conn.close()
    assert answer.split(b" ")[1:2] in ([b"413"], [b"400"]), answer
    took = time.monotonic() - started

    with httpx.Client(base_url=api_pg.url, timeout=30) as http:
        agent = http.post(
            "/api/v1/agents/provision", json={"name": "r12-flood"}, headers=api_pg.admin
        ).json()
        headers = {"Authorization": f"Bearer {agent['token']}"}
        old = datetime.now(UTC) - timedelta(days=200)
        codes: dict[int, int] = {}
        flood_started = time.monotonic()
        for _ in range(200):
            body = snapshot_report(old, message="m" * 60000, report_id=report_id())
            status = http.post("/api/v1/reports/snapshots", json=body, headers=headers).status_code
            codes[status] = codes.get(status, 0) + 1
        flood_s = time.monotonic() - flood_started
    stored = api_pg.rows.count("snapshots", f"agent_id = {agent['id']}")
    with api_pg.rows.engine.connect() as c:
        size = c.execute(
            sa.text(
                "SELECT coalesce(sum(pg_column_size(s.*)), 0) FROM snapshots s WHERE agent_id = :a"
            ),
            {"a": agent["id"]},
        ).scalar_one()
    assert codes.get(429, 0) > 0 and stored == codes.get(201, 0) <= 60
    figures.append(
        f"R12 chunked 64 MiB body beside Content-Length: 10: {answer.split(b' ')[1].decode()}"
        f" after {sent >> 20} MiB sent ({took:.1f} s); report flood of 200 backdated 60 KB"
        f" reports in {flood_s:.1f} s: {codes.get(201, 0)} stored ({size / 1e6:.1f} MB),"
        f" {codes.get(429, 0)} refused 429 (was: all 201, +43 MB)"
    )
