"""`saveos escrow verify` against a real offsite copy (moto S3) and a real API: the escrowed
passphrase and key.export must open the repository; an altered passphrase fails clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
import yaml
from agent_support import AgentHost, make_tree, write_private
from cli_support import environ_without, saveos
from conftest import ApiServer
from offsite_support import REGION, offsite_config

pytestmark = pytest.mark.borg


@pytest.fixture
def api(api_server_sqlite):
    return api_server_sqlite


def _cli(api: ApiServer, escrow_dir, *args: str) -> subprocess.CompletedProcess:
    env = environ_without(
        ("BORG_", "SAVEOS_"),
        SAVEOS_API_URL=api.url,
        SAVEOS_ADMIN_TOKEN=api.admin_token,
        SAVEOS_ESCROW_DIR=str(escrow_dir),
        SAVEOS_DATA_DIR=str(escrow_dir.parent / "data"),
        COLUMNS="200",
    )
    return saveos(*args, env=env, timeout=300)


def test_escrow_verify_passes_then_fails_for_altered_passphrase(tmp_path, agent_pyz, s3, api):
    httpx.post(
        api.url + "/api/v1/agents/provision",
        json={"name": "testhost"},
        headers=api.admin_headers(),
    ).raise_for_status()
    host = AgentHost(tmp_path / "host", agent_pyz)
    cfg = offsite_config(host.root / "etc" / "offsite.json", s3, host.repo, "testhost", host.root)
    host.write_config(offsite={"config": str(cfg), "python": sys.executable})
    make_tree(host.src)
    host.init()
    # Small segments, so the copy has many and verify needs only the newest few of them.
    assert host.borg("config", str(host.repo), "max_segment_size", "65536").returncode == 0
    for n in range(3):
        (host.src / f"new-{n}.bin").write_bytes(os.urandom(200_000))
        assert host.json("backup")[0] == 0
    assert host.json("offsite", "sync")[0] == 0
    segments = [p for p in (host.repo / "data").rglob("*") if p.is_file()]
    assert len(segments) > 8, segments

    escrow = tmp_path / "escrow"
    write_private(escrow / "testhost" / "passphrase", host.passphrase + "\n")
    rc, exported = host.json("key-export", "--out", str(escrow / "testhost" / "key.export"))
    assert rc == 0, exported
    creds = s3.credentials_file(tmp_path / "controller" / "s3-credentials")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "testhost": {
                            "ansible_host": "127.0.0.1",
                            "saveos_agent_offsite_bucket": s3.bucket,
                            "saveos_agent_offsite_prefix": "fleet",
                            "saveos_agent_offsite_endpoint_url": s3.url,
                            "saveos_agent_offsite_region": REGION,
                            "saveos_agent_offsite_credentials_file": str(creds),
                        }
                    }
                }
            }
        )
    )

    proc = _cli(api, escrow, "escrow", "verify", "-i", str(inventory), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    (res,) = out["results"]
    assert res["result"] == "ok" and res["method"] == "offsite" and res["archives"] == 3
    # Not the whole copy: the repository's own files and its newest segments only.
    assert res["objects_offsite"] == len(s3.objects("fleet/testhost/"))
    assert res["objects_fetched"] <= res["objects_offsite"] - len(segments) + 4, res
    assert res["reported"] is True
    assert host.passphrase not in proc.stdout + proc.stderr

    status = httpx.get(api.url + "/api/v1/fleet/status", headers=api.admin_headers()).json()
    proven_at = status["agents"][0]["last_escrow_at"]
    assert proven_at and status["agents"][0]["last_escrow_result"] == "ok"

    write_private(escrow / "testhost" / "passphrase", host.passphrase + "-altered\n")
    proc = _cli(api, escrow, "escrow", "verify", "-i", str(inventory))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "escrow NOT proven for: testhost" in proc.stderr
    assert "passphrase" in proc.stdout.lower() and "incorrect" in proc.stdout.lower()
    assert host.passphrase not in proc.stdout + proc.stderr
    agent = httpx.get(api.url + "/api/v1/fleet/status", headers=api.admin_headers()).json()
    agent = agent["agents"][0]
    # the last good proof stays visible; the latest result says it no longer holds
    assert agent["last_escrow_result"] == "fail" and agent["last_escrow_at"] == proven_at

    proc = _cli(api, escrow, "status")
    assert "FAILED" in proc.stdout, proc.stdout
