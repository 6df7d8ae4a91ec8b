"""Offsite copies: the agent runs the sync program (boto3, its own python) against moto's real
S3 server on loopback; reports go through the spool to a real API."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path

import httpx
import pytest
from agent_support import AgentHost, make_tree, write_private
from conftest import ApiServer, free_port
from offsite_support import MotoS3, local_repo_files, offsite_config

pytestmark = pytest.mark.borg

PREFIX = "fleet/testhost/"


def _host(tmp_path: Path, pyz: Path, s3: MotoS3, **offsite_extra) -> AgentHost:
    host = AgentHost(tmp_path / "host", pyz)
    config = offsite_config(
        host.root / "etc" / "offsite.json",
        s3,
        host.repo,
        "testhost",
        host.root / "state",
        **offsite_extra,
    )
    host.write_config(offsite={"config": str(config), "python": sys.executable})
    make_tree(host.src)
    host.init()
    return host


def _sync(host: AgentHost, *extra: str) -> tuple[int, dict]:
    return host.json("offsite", "sync", *extra)


def _backup(host: AgentHost) -> None:
    rc, result = host.json("backup")
    assert rc == 0, result


def _remote_matches_local(s3: MotoS3, host: AgentHost) -> None:
    local = local_repo_files(host.repo)
    remote = s3.objects(PREFIX)
    for rel, digest in local.items():
        assert PREFIX + rel in remote, f"{rel} missing offsite"
        assert s3.sha256(PREFIX + rel) == digest, f"{rel} differs offsite"


def test_first_sync_all_then_only_changed_then_nothing(tmp_path, agent_pyz, s3):
    host = _host(tmp_path, agent_pyz, s3)
    _backup(host)
    rc, first = _sync(host)
    assert rc == 0, first
    local = local_repo_files(host.repo)
    assert first["result"] == "ok"
    assert first["objects"] == len(local) and first["objects_uploaded"] == len(local)
    assert first["bytes_uploaded"] == sum((host.repo / r).stat().st_size for r in local)
    _remote_matches_local(s3, host)
    before = s3.objects(PREFIX)

    (host.src / "data" / "new.bin").write_bytes(os.urandom(200_000))
    _backup(host)
    rc, second = _sync(host)
    assert rc == 0, second
    after_local = local_repo_files(host.repo)
    changed = {r for r, d in after_local.items() if local.get(r) != d}
    assert changed and len(changed) < len(after_local)
    assert second["objects_uploaded"] == len(changed)
    # untouched segments kept their objects (not re-uploaded); vanished files wait for the delay
    after = s3.objects(PREFIX)
    for rel in set(after_local) - changed:
        assert after[PREFIX + rel] == before[PREFIX + rel]
    vanished = set(local) - set(after_local)
    assert second["pending_delete"] == len(vanished)
    assert all(PREFIX + rel in after for rel in vanished)
    _remote_matches_local(s3, host)

    rc, third = _sync(host)
    assert rc == 0 and third["objects_uploaded"] == 0 and third["bytes_uploaded"] == 0
    assert s3.objects(PREFIX) == after

    # a remote object deleted by hand is restored by the next sync
    victim = PREFIX + "config"
    s3.client().delete_object(Bucket=s3.bucket, Key=victim)
    rc, result = _sync(host)
    assert rc == 0, result
    assert result["objects_uploaded"] == 1 and result["objects_restored"] == 1
    assert s3.sha256(victim) == local_repo_files(host.repo)["config"]

    # never while a borg lock is held: skipped, nothing touched
    s3.client().delete_object(Bucket=s3.bucket, Key=victim)
    lock = host.repo / "lock.exclusive"
    lock.mkdir()
    holder = lock / f"otherhost@1234.{os.getpid()}-0"
    holder.touch()
    rc, result = _sync(host)
    assert rc == 1 and result["result"] == "skipped"
    assert "repo locked" in result["message"] and "otherhost" in result["message"]
    assert victim not in s3.objects(PREFIX)
    holder.unlink()
    lock.rmdir()

    # vanished files are deleted once the delay since first seen missing has passed
    rc, result = _sync(host)
    assert rc == 0 and result["objects_uploaded"] == 1 and victim in s3.objects(PREFIX)
    assert result["pending_delete"] == len(vanished) > 0
    manifest_path = next((host.root / "state").glob("offsite-*.json"))
    manifest = json.loads(manifest_path.read_text())
    assert set(manifest["missing"]) == {PREFIX + rel for rel in vanished}
    for key in manifest["missing"]:
        manifest["missing"][key] -= 3601  # the config's delete_delay_s is 3600
    manifest_path.write_text(json.dumps(manifest))
    rc, result = _sync(host)
    assert rc == 0 and result["objects_deleted"] == len(vanished) and result["pending_delete"] == 0
    assert set(s3.objects(PREFIX)) == {PREFIX + rel for rel in local_repo_files(host.repo)}


def test_large_segment_goes_multipart(tmp_path, agent_pyz, s3):
    mib = 1024 * 1024
    host = _host(tmp_path, agent_pyz, s3, multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    (host.src / "data" / "big.bin").write_bytes(os.urandom(12 * mib))
    _backup(host)
    rc, result = _sync(host)
    assert rc == 0, result
    big = [k for k, o in s3.objects(PREFIX).items() if o["size"] > 10 * mib]
    assert big, "expected one segment above 10 MiB"
    # S3 gives multipart uploads an ETag of md5-of-md5s with a part count suffix
    assert all("-" in s3.objects(PREFIX)[k]["etag"] for k in big)
    _remote_matches_local(s3, host)


def test_world_readable_credentials_refused(tmp_path, agent_pyz, s3):
    host = _host(tmp_path, agent_pyz, s3)
    creds = host.root / "etc" / "s3-credentials"
    creds.chmod(0o644)
    rc, result = _sync(host)
    assert rc == 2 and result["result"] == "error"
    assert "credentials_file" in result["message"] and "chmod 600" in result["message"]
    assert s3.secret_key not in json.dumps(result)


def test_endpoint_down_fails_spools_then_next_sync_succeeds(tmp_path, agent_pyz, s3):
    port = free_port()
    server = ApiServer(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "api", port=port).start()
    resp = httpx.post(
        server.url + "/api/v1/agents/provision",
        json={"name": "testhost", "backup_interval_s": 3600},
        headers=server.admin_headers(),
    )
    agent_id, token = resp.json()["id"], resp.json()["token"]
    server.stop()  # the API is down too: the report must wait in the spool
    host = _host(tmp_path, agent_pyz, s3)
    token_file = write_private(host.root / "etc" / "token", token)
    host.write_config(api_url=server.url, agent_id=agent_id, token_file=str(token_file))
    _backup(host)
    offsite = json.loads((host.root / "etc" / "offsite.json").read_text())
    offsite["endpoint_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    write_private(host.root / "etc" / "offsite.json", json.dumps(offsite))

    rc, failed = _sync(host)
    assert rc == 2 and failed["result"] == "error" and failed["reported"] is False
    assert "connect" in failed["message"].lower()
    spooled = [json.loads(p.read_text()) for p in (host.root / "spool").glob("*.json")]
    offsite_reports = [r for r in spooled if r["path"] == "/api/v1/reports/offsite"]
    assert len(offsite_reports) == 1 and offsite_reports[0]["body"]["result"] == "error"

    offsite["endpoint_url"] = s3.url
    write_private(host.root / "etc" / "offsite.json", json.dumps(offsite))
    server.start()
    try:
        rc, ok = _sync(host)
        assert rc == 0 and ok["result"] == "ok" and ok["reported"] is True
        assert not list((host.root / "spool").glob("*.json"))
        # the heartbeat declares the offsite interval; the fleet status shows the sync
        assert host.json("heartbeat")[0] == 0
        fleet = httpx.get(server.url + "/api/v1/fleet/status", headers=server.admin_headers())
        me = fleet.json()["agents"][0]
        assert me["last_offsite_result"] == "ok" and me["last_offsite_at"]
        assert me["offsite_interval_s"] == 86400
        metrics = httpx.get(server.url + "/metrics", headers=server.admin_headers()).text
        assert 'saveos_agent_last_offsite_sync_timestamp_seconds{agent="testhost"}' in metrics
    finally:
        server.stop()


def test_credentials_never_in_argv_or_logs(tmp_path, agent_pyz, s3):
    host = _host(tmp_path, agent_pyz, s3)
    (host.src / "data" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    _backup(host)
    secret = s3.secret_key
    seen: list[str] = []
    stop = threading.Event()

    def watch_cmdlines():
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        seen.append(
                            Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
                        )

    watcher = threading.Thread(target=watch_cmdlines, daemon=True)
    watcher.start()
    try:
        proc = host.run("offsite", "sync", "--json", "-vvv")
    finally:
        stop.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr
    assert any("saveos_offsite" in c for c in seen), "the watcher never saw the sync program"
    assert not [c for c in seen if secret in c or s3.access_key in c]
    for text in (proc.stdout, proc.stderr, host.log_file.read_text()):
        assert secret not in text
    for path in (host.root / "spool").rglob("*.json"):
        assert secret not in path.read_text()
    for path in (p for p in (host.root / "state").rglob("*") if p.is_file()):
        assert secret not in path.read_text()
