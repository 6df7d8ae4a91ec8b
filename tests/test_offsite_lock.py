"""Offsite copies the host cannot delete: S3 Object Lock on moto's real S3 server on loopback.

The host syncs with its own credentials into a bucket with Object Lock; with those same
credentials, deleting or overwriting a locked version fails or only adds a newer version, and
the copy as it stood before the attack comes back from the object versions and opens with borg.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from agent_support import AgentHost, make_tree, tree_sha256
from botocore.exceptions import ClientError
from offsite_support import MotoS3, local_repo_files, offsite_config
from saveos_offsite import replicate
from saveos_offsite import settings as offsite_settings

pytestmark = pytest.mark.borg

LOCKED = "saveos-locked"
PREFIX = "fleet/testhost/"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    server.client().create_bucket(Bucket=LOCKED, ObjectLockEnabledForBucket=True)
    yield server
    server.stop()


def _host(tmp_path, pyz, s3, **extra) -> AgentHost:
    host = AgentHost(tmp_path / "host", pyz)
    config = offsite_config(
        host.root / "etc" / "offsite.json", s3, host.repo, "testhost", host.root / "state", **extra
    )
    host.write_config(offsite={"config": str(config), "python": sys.executable})
    make_tree(host.src)
    host.init()
    return host


def _settings(host: AgentHost) -> offsite_settings.Settings:
    return offsite_settings.load(str(host.root / "etc" / "offsite.json"))


def test_locked_copy_survives_the_hosts_own_credentials_and_restores(tmp_path, agent_pyz, s3):
    host = _host(tmp_path, agent_pyz, s3, bucket=LOCKED, **_lock("COMPLIANCE", 30))
    assert host.json("backup")[0] == 0
    rc, synced = host.json("offsite", "sync")
    assert rc == 0, synced
    proof = replicate.verify(_settings(host))
    assert proof["status"] == "ok", proof
    assert proof["objects_locked"] == proof["objects"] == len(local_repo_files(host.repo))
    before = {key: s3.sha256(key, LOCKED) for key in s3.objects(PREFIX, LOCKED)}
    archives = host.archives()
    tree = tree_sha256(host.src)
    time.sleep(1.1)  # S3 stamps versions to the second
    good = datetime.now(UTC)
    time.sleep(1.1)

    # the attacker holds the host's credentials (the same keys the sync used)
    attacker = s3.client()
    version_of = {
        v["Key"]: v["VersionId"]
        for v in attacker.list_object_versions(Bucket=LOCKED, Prefix=PREFIX)["Versions"]
    }
    refused = 0
    for key, version in version_of.items():
        with pytest.raises(ClientError) as denied:
            attacker.delete_object(Bucket=LOCKED, Key=key, VersionId=version)
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        refused += 1
    with pytest.raises(ClientError):  # COMPLIANCE: no bypass, whoever asks
        attacker.delete_object(
            Bucket=LOCKED,
            Key=PREFIX + "config",
            VersionId=version_of[PREFIX + "config"],
            BypassGovernanceRetention=True,
        )
    # what the credentials can do: write garbage over keys (new versions) and delete markers
    attacker.put_object(Bucket=LOCKED, Key=PREFIX + "config", Body=b"garbage")
    for key in [k for k in version_of if "/data/" in k][:2]:
        attacker.delete_object(Bucket=LOCKED, Key=key)
    assert s3.sha256(PREFIX + "config", LOCKED) != before[PREFIX + "config"]
    # verify says so: the current config is an unlocked version, segments are gone
    after = replicate.verify(_settings(host))
    assert after["status"] == "error" and "config" in after["unlocked"], after

    # every locked version is still there, and the copy as it stood comes back and opens
    dest = tmp_path / "recovered"
    fetched = replicate.fetch(_settings(host), str(dest), as_of=good)
    assert fetched["status"] == "ok", fetched
    assert local_repo_files(dest) == local_repo_files(host.repo)
    with pytest.raises(offsite_settings.OffsiteError, match=r"as of .*first object is from"):
        replicate.fetch(_settings(host), str(tmp_path / "early"), as_of=good - timedelta(days=1))
    restored = tmp_path / "restored"
    restored.mkdir()
    env = host.env | {"BORG_PASSPHRASE": host.passphrase, "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
    listing = subprocess.run(
        ["borg", "list", "--json", str(dest)], env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr
    assert [a["name"] for a in json.loads(listing.stdout)["archives"]] == archives
    subprocess.run(
        ["borg", "extract", f"{dest}::{archives[-1]}"],
        cwd=restored,
        env=env,
        check=True,
        capture_output=True,
    )
    got = tree_sha256(restored / str(host.src).lstrip("/"))
    assert {k: v for k, v in got.items() if not k.endswith(".tmp")} == {
        k: v for k, v in tree.items() if not k.endswith(".tmp")
    }
    assert refused == len(version_of)


def test_locks_are_extended_while_objects_are_current(tmp_path, agent_pyz, s3):
    host = _host(tmp_path, agent_pyz, s3, bucket=LOCKED, prefix="extend", **_lock("GOVERNANCE", 2))
    assert host.json("backup")[0] == 0
    settings = _settings(host)
    first = replicate.sync(settings)
    assert first["status"] == "ok" and first["objects_relocked"] == 0
    # a day and a half later the locks have less than half their period left: extended
    later = time.time() + 1.5 * 86400
    second = replicate.sync(settings, now=later)
    assert second["objects_uploaded"] == 0
    assert second["objects_relocked"] == second["objects"] > 0
    head = s3.client().head_object(Bucket=LOCKED, Key=settings.key_prefix + "config")
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=3)
    assert replicate.sync(settings, now=later)["objects_relocked"] == 0


def test_verify_refuses_a_bucket_without_lock(tmp_path, agent_pyz, s3):
    host = _host(tmp_path, agent_pyz, s3)  # the plain bucket: no versioning, no Object Lock
    assert host.json("backup")[0] == 0
    assert host.json("offsite", "sync")[0] == 0
    proof = replicate.verify(_settings(host))
    assert proof["status"] == "error"
    assert "no Object Lock" in proof["message"] and "not locked" in proof["message"]
    assert proof["objects_locked"] == 0


def test_lock_settings_go_together(tmp_path, s3):
    base = {"bucket": "b-ok", "repository": "/r", "host": "h"}
    for bad in ({"object_lock_mode": "GOVERNANCE"}, {"object_lock_days": 3}):
        with pytest.raises(offsite_settings.OffsiteError, match="go together"):
            offsite_settings.validate({**base, **bad}, "x")
    with pytest.raises(offsite_settings.OffsiteError, match="GOVERNANCE or COMPLIANCE"):
        offsite_settings.validate({**base, **_lock("LEGAL", 3)}, "x")
    ok = offsite_settings.validate({**base, **_lock("COMPLIANCE", 30)}, "x")
    assert (ok.object_lock_mode, ok.object_lock_days) == ("COMPLIANCE", 30)


def _lock(mode: str, days: int) -> dict:
    return {"object_lock_mode": mode, "object_lock_days": days}
