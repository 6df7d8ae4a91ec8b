"""The operator's flow through the `saveos` CLI on real SSH hosts, the API on PostgreSQL.

deploy → backup → status --json (3 hosts ok, one snapshot each) → restore (identical bytes)
→ an agent stops and the API's clock passes its interval → status exits 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta

import cli_support
import httpx
import pytest

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]

HOSTS = ["lab1", "lab2", "lab3"]
SEED = "/etc/saveos-cli-test/data.bin"


def saveos(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return cli_support.saveos(*args, env=env, timeout=600)


def explain(result: subprocess.CompletedProcess) -> str:
    return (
        f"rc={result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def fleet_env(lab3, tmp_path_factory):
    """The API on a fresh PostgreSQL database and the environment the operator's shell has."""
    from conftest import ApiServer, _pg_database

    tmp = tmp_path_factory.mktemp("cli-lab")
    with _pg_database("saveos_test_cli_lab") as (_, url):
        server = ApiServer(url, tmp / "api").start()
        env = dict(os.environ)
        env.update(
            PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            SAVEOS_API_URL=server.url,
            SAVEOS_ADMIN_TOKEN=server.admin_token,
            SAVEOS_DATA_DIR=str(tmp / "data"),
            SAVEOS_ESCROW_DIR=str(tmp / "escrow"),
            COLUMNS="200",
        )
        yield server, env
        server.stop()


def test_deploy_backup_status_restore_and_alarm(lab3, fleet_env):
    server, env = fleet_env
    inventory = str(lab3.inventory_path)

    # Data worth restoring on every host, different per host.
    for host in HOSTS:
        seeded = lab3.ssh(
            host,
            f"mkdir -p {os.path.dirname(SEED)} && head -c 300000 /dev/urandom > {SEED} "
            f"&& sha256sum {SEED}",
        )
        assert seeded.returncode == 0, seeded.stderr
    digests = {h: lab3.ssh(h, f"sha256sum {SEED}").stdout.split()[0] for h in HOSTS}
    assert len(set(digests.values())) == 3

    deployed = saveos(env, "deploy", "--inventory", inventory)
    assert deployed.returncode == 0, explain(deployed)
    for host in HOSTS:
        assert host in deployed.stdout

    backed_up = saveos(env, "backup", "--inventory", inventory)
    assert backed_up.returncode == 0, explain(backed_up)

    shown = saveos(env, "status", "--json")
    assert shown.returncode == 0, explain(shown)
    doc = json.loads(shown.stdout)
    agents = {a["name"]: a for a in doc["agents"]}
    assert sorted(agents) == HOSTS
    for host in HOSTS:
        assert agents[host]["status"] == "ok", agents[host]
        assert agents[host]["last_archive"].startswith(host + "-")
        assert agents[host]["original_size"] >= 300000
    with httpx.Client(base_url=server.url, headers=server.admin_headers()) as http:
        for host in HOSTS:
            agent_id = http.get(f"/api/v1/agents/by-name/{host}").json()["id"]
            snaps = http.get(f"/api/v1/agents/{agent_id}/snapshots").json()
            assert snaps["total"] == 1, snaps

    # The operator's snapshot listing names the same archive.
    listed = saveos(env, "snapshots", "lab2", "--json")
    assert listed.returncode == 0, explain(listed)
    assert agents["lab2"]["last_archive"] in listed.stdout

    # Lose the file on lab2, restore it from the latest archive into a target, compare bytes.
    assert lab3.ssh("lab2", f"rm -f {SEED}").returncode == 0
    restored = saveos(
        env, "restore", "--inventory", inventory, "lab2", "--path", SEED,
        "--target", "/srv/restore-cli",
    )  # fmt: skip
    assert restored.returncode == 0, explain(restored)
    got = lab3.ssh("lab2", f"sha256sum /srv/restore-cli{SEED}")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[0] == digests["lab2"]

    # A warm re-deploy only reads: its probe asks the API whose token it is (GET /agents/me) and
    # never heartbeats, so a job queued for the host is still queued after it. lab1's daemon,
    # the only other heartbeat on a lab host, is paused meanwhile (still alive to the probe).
    pid = lab3.ssh("lab1", "cat /run/saveos/agent.pid").stdout.strip()
    assert pid.isdigit(), pid
    assert lab3.ssh("lab1", f"kill -STOP {pid}").returncode == 0
    try:
        with httpx.Client(base_url=server.url, headers=server.admin_headers()) as http:
            queued = http.post("/api/v1/jobs", json={"kind": "check", "agents": ["lab1"]})
            job_id = queued.json()["jobs"][0]["id"]
            redeployed = saveos(env, "deploy", "--inventory", inventory, "--limit", "lab1")
            assert redeployed.returncode == 0, explain(redeployed)
            assert http.get(f"/api/v1/jobs/{job_id}").json()["state"] == "queued"
    finally:
        lab3.ssh("lab1", f"kill -CONT {pid}")

    # lab3's agent stops; once the clock passes 3 heartbeat intervals after its last beat, the
    # fleet is in alarm (exit 2) and lab3 is named. The API's clock moves with `status --at`, not
    # with sleeps. lab1 and lab2 keep beating, so the same instant leaves them ok.
    stopped = lab3.ssh("lab3", "/opt/saveos/supervise stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout

    def last_beats() -> dict[str, datetime]:
        result = saveos(env, "status", "--json")
        assert result.returncode == 0, explain(result)
        return {
            a["name"]: datetime.fromisoformat(a["last_heartbeat"].replace("Z", "+00:00"))
            for a in json.loads(result.stdout)["agents"]
        }

    lab3_last = last_beats()["lab3"]
    deadline = time.monotonic() + 30
    while True:  # at most ~10 s: the others' last beat must be clearly after lab3's
        for host in ("lab1", "lab2"):
            assert lab3.ssh(host, "saveos-agent heartbeat").returncode == 0
        beats = last_beats()
        if min(beats["lab1"], beats["lab2"]) >= lab3_last + timedelta(seconds=10):
            break
        assert time.monotonic() < deadline, beats
        time.sleep(2)
    assert beats["lab3"] == lab3_last  # stopped means silent for real
    later = (lab3_last + timedelta(seconds=3 * 60 + 5)).isoformat()
    alarmed = saveos(env, "status", "--json", "--at", later)
    assert alarmed.returncode == 2, explain(alarmed)
    late = {a["name"]: a["status"] for a in json.loads(alarmed.stdout)["agents"]}
    assert late == {"lab1": "ok", "lab2": "ok", "lab3": "silent"}, late
    human = saveos(env, "status", "--at", later)
    assert human.returncode == 2 and "silent" in human.stdout, explain(human)
