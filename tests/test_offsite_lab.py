"""Disaster recovery in the lab: the role installs the offsite venv offline, backups sync to S3
(moto on loopback), the escrow opens the copy, and a destroyed host's files come back on another
host via `saveos recover`, identical."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from ansible_support import ansible_env, explain, playbook
from cli_support import saveos
from offsite_support import REGION

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]

FILES = {
    "srv/data/app.conf": "key = value\n",
    "srv/data/nested/deep/blob.txt": "x" * 100_000,
    "srv/data/grüße.txt": "unicode\n",
}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return saveos(*args, env=env | {"COLUMNS": "200"}, timeout=600)


def _sha256sums(lab, host: str, root: str) -> dict[str, str]:
    """relative path -> sha256 of the test's files under root on a lab host."""
    names = " ".join(f"'{rel}'" for rel in FILES)
    proc = lab.ssh(host, f"cd {root} && sha256sum {names}")
    assert proc.returncode == 0, proc.stderr
    return {line.split(None, 1)[1]: line.split()[0] for line in proc.stdout.splitlines()}


def test_offsite_sync_escrow_and_recover_onto_another_host(lab3, api_server_pg, s3, tmp_path):
    api = api_server_pg
    data_dir = tmp_path / "data"
    escrow = tmp_path / "escrow"
    creds = s3.credentials_file(tmp_path / "controller" / "s3-credentials")
    inventory = yaml.safe_load(lab3.inventory_path.read_text())
    group = inventory["all"]["children"]["lab"]
    group["vars"] = {
        "saveos_agent_sources": ["/srv/data"],
        "saveos_agent_heartbeat_interval_s": 10,
        "saveos_agent_offsite_bucket": s3.bucket,
        "saveos_agent_offsite_prefix": "fleet",
        "saveos_agent_offsite_endpoint_url": s3.url,
        "saveos_agent_offsite_region": REGION,
        "saveos_agent_offsite_credentials_file": str(creds),
        "saveos_agent_offsite_interval_s": 3600,
    }
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory, sort_keys=False))
    env = ansible_env(
        {
            "SAVEOS_API_URL": api.url,
            "SAVEOS_ADMIN_TOKEN": api.admin_token,
            "SAVEOS_ESCROW_DIR": str(escrow),
            "SAVEOS_DATA_DIR": str(data_dir),
        }
    )
    for host in ("lab1", "lab2"):
        assert lab3.ssh(host, "mkdir -p /srv/data").returncode == 0
    for rel, text in FILES.items():
        write = lab3.ssh("lab1", f"mkdir -p $(dirname /{rel}) && cat > /{rel} << 'EOF'\n{text}EOF")
        assert write.returncode == 0, write.stderr
    originals = _sha256sums(lab3, "lab1", "/")
    assert len(originals) == 3

    deploy = playbook(inv, "playbooks/deploy.yml", "--limit", "lab1,lab2", env=env)
    assert deploy.returncode == 0, explain(deploy)
    # the wheels came from the controller's wheelhouse; boto3 lives in the venv only
    assert list((data_dir / "wheelhouse").glob("boto3-*.whl"))
    probe = lab3.ssh(
        "lab2",
        "/opt/saveos/offsite-venv/bin/python -c 'import boto3' && "
        "stat -c '%a' /etc/saveos/offsite-credentials /etc/saveos/offsite.json",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["600", "600"]

    backup = playbook(inv, "playbooks/backup.yml", "--limit", "lab1", env=env)
    assert backup.returncode == 0, explain(backup)
    objects = s3.objects("fleet/lab1/")
    assert any(k.startswith("fleet/lab1/data/") for k in objects), objects
    cli_env = {k: v for k, v in env.items() if not k.startswith("BORG_")}
    status = json.loads(_cli(cli_env, "status", "--json").stdout)
    lab1 = next(a for a in status["agents"] if a["name"] == "lab1")
    assert lab1["last_offsite_result"] == "ok" and lab1["offsite_interval_s"] == 3600

    proof = _cli(cli_env, "escrow", "verify", "-i", str(inv), "--limit", "lab1", "--json")
    assert proof.returncode == 0, proof.stdout + proof.stderr
    assert json.loads(proof.stdout)["results"][0]["method"] == "offsite"
    live = _cli(cli_env, "escrow", "verify", "-i", str(inv), "--limit", "lab1", "--method", "live")
    assert live.returncode == 0, live.stdout + live.stderr

    # lab1 dies: repository and data gone
    gone = lab3.ssh("lab1", "rm -rf /var/lib/saveos/repo /srv/data")
    assert gone.returncode == 0
    recovered = _cli(
        cli_env, "recover", "-i", str(inv), "--from", "lab1", "--onto", "lab2",
        "--target", "/srv/recovered", "--json",
    )  # fmt: skip
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    result = json.loads(recovered.stdout)
    assert result["status"] == "ok" and result["files_verified"] == 3 and result["rto_s"] > 0
    assert _sha256sums(lab3, "lab2", "/srv/recovered") == originals
    # nothing of the escrow stays on lab2: no key file, no fetched repository
    leftovers = lab3.ssh("lab2", "ls -A /var/lib/saveos/recover/ 2>/dev/null | wc -l")
    assert leftovers.stdout.strip() == "0"
    passphrase = (escrow / "lab1" / "passphrase").read_text().strip()
    for out in (recovered.stdout, recovered.stderr, proof.stdout, live.stdout):
        assert passphrase not in out
    assert os.path.exists(escrow / "lab1" / "key.export")
