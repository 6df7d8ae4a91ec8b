"""Issue 15, offsite copies a host cannot delete, on the repository-server lab (conftest.repo_fleet
+ moto's S3 server on loopback): the repository server makes the copy after the central prune
verified the repository, the hosts hold no S3 credential anywhere (disk, environment, argv), the
copy is Object-Locked and opens byte for byte with the escrowed key, root on a host can neither
delete nor overwrite it for good, and a tampered repository is never copied.

Over 400 lines on purpose: both cases run on the one repository-server lab with S3 the module
sets up (minutes), the second on what the first made."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import cli_support
import httpx
import pytest
import yaml
from ansible_support import playbook
from offsite_support import REGION, MotoS3
from saveos_offsite import replicate

from acceptance.conftest import SOURCES, CmdlineWatcher
from acceptance.test_r9_append_only import PRELUDE
from saveos_cli import inventory_hosts, repo_servers
from saveos_cli.retention import offsite

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

BUCKET = "saveos-server-locked"
PREFIX = "fleet"
FILES = {"r9c/app.conf": b"key = value\n", "r9c/blob.bin": bytes(range(256)) * 2000}


@pytest.fixture(scope="module")
def s3(repo_fleet):
    server = MotoS3(repo_fleet.work / "moto").start()
    server.client().create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    yield server
    server.stop()


def _inventory(fleet, s3: MotoS3, path: Path, group_vars: dict | None = None) -> Path:
    """The fleet's inventory with the repository server making COMPLIANCE-locked copies. The
    controller's credentials file sits in the lab directory, which every lab host has hidden."""
    creds = s3.credentials_file(_credentials(fleet))
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["all"]["children"]["lab"]["vars"].update(
        {"saveos_agent_retention": {"keep_within": "7d"}, **(group_vars or {})}
    )
    inventory["all"]["children"]["saveos_repo_servers"]["hosts"][fleet.server].update(
        {
            "saveos_repo_server_offsite_bucket": BUCKET,
            "saveos_repo_server_offsite_prefix": PREFIX,
            "saveos_repo_server_offsite_endpoint_url": s3.url,
            "saveos_repo_server_offsite_region": REGION,
            "saveos_repo_server_offsite_credentials_file": str(creds),
            "saveos_repo_server_offsite_object_lock_mode": "COMPLIANCE",
            "saveos_repo_server_offsite_object_lock_days": 30,
        }
    )
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _credentials(fleet) -> Path:
    return fleet.lab.dir / "controller-s3" / "credentials"


def _playbook(fleet, inventory: Path, *args: str) -> subprocess.CompletedProcess:
    result = playbook(inventory, "playbooks/deploy.yml", *args, env=fleet.env, timeout=900)
    fleet.outputs.append(result.stdout + result.stderr)
    return result


def _prune(fleet, inventory: Path, host: str) -> tuple[int, dict]:
    run = fleet.saveos("prune", "--inventory", str(inventory), "--limit", host, "--json")
    try:
        return run.returncode, json.loads(run.stdout)["results"][0]
    except (json.JSONDecodeError, IndexError, KeyError):
        raise AssertionError(f"prune rc={run.returncode}: {run.stdout}\n{run.stderr}") from None


def _versions(s3: MotoS3, host: str) -> dict[str, str]:
    """key -> etag of every object version of the host's copy."""
    listed = s3.client().list_object_versions(Bucket=BUCKET, Prefix=f"{PREFIX}/{host}/")
    return {f"{v['Key']}@{v['VersionId']}": v["ETag"] for v in listed.get("Versions", [])}


_PROC_SCAN = """
import glob, os, sys
keys = sys.stdin.buffer.read().split()
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        data = open(path, "rb").read()
    except OSError:
        continue
    if any(k in data for k in keys):
        print(path)
"""


def _no_s3_secret_on(fleet, host: str, s3: MotoS3) -> list[str]:
    """Where the host holds either S3 key: every file it wrote (its overlay layers: /etc /var
    /opt /root /usr /home /srv), every process's environment and argv, its offsite files."""
    secrets = (s3.access_key.encode(), s3.secret_key.encode())
    found = []
    upper = fleet.lab.host_dir(host) / "upper"
    for path in upper.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path.relative_to(upper)}" for s in secrets if s in data]
    # the keys reach the probe on stdin: in its argv they would be found right there
    probe = fleet.lab_ssh_stdin(host, f"python3 -c '{_PROC_SCAN}'", b"\n".join(secrets))
    assert probe.returncode == 0, probe.stderr
    if probe.stdout.strip():
        found.append(f"process environment/argv: {probe.stdout.decode().split()}")
    for leftover in ("/etc/saveos/offsite.json", "/etc/saveos/offsite-credentials"):
        if fleet.sh(host, f"test -e {leftover}").returncode == 0:
            found.append(leftover)
    agent = json.loads(fleet.sh(host, "cat /etc/saveos/agent.json").stdout)
    if "offsite" in agent:
        found.append("agent.json has an offsite section")
    return found


def _host_http(fleet, host: str, method: str, url: str, body: bytes = b"") -> int:
    """An S3 request from the host itself, as root there could send one: the HTTP status."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[2], data=sys.argv[3].encode() or None, "
        "method=sys.argv[1])\n"
        "try:\n    print(urllib.request.urlopen(req, timeout=10).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    r = fleet.sh(host, f"python3 -c '{script}' {method} '{url}' '{body.decode()}'")
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def inventory(repo_fleet, s3, tmp_path_factory) -> Path:
    """The inventory with the server making the copies, and the server deployed with it."""
    fleet = repo_fleet
    inventory = _inventory(fleet, s3, tmp_path_factory.mktemp("r9c") / "offsite.yml")
    deployed = _playbook(fleet, inventory, "--limit", fleet.server)
    assert deployed.returncode == 0, deployed.stdout[-5000:] + deployed.stderr[-2000:]
    on_server = fleet.sh(fleet.server, "stat -c '%a %U' /etc/saveos-repo/offsite-credentials")
    assert on_server.stdout.split() == ["600", "root"], on_server.stdout + on_server.stderr
    return inventory


def test_r9c_the_repository_server_makes_a_locked_copy_the_host_cannot_touch(
    repo_fleet, s3, inventory, tmp_path, figures
):
    fleet = repo_fleet
    # A host on a repository server is refused S3 credentials of its own: a clear message.
    own = _inventory(fleet, s3, tmp_path / "own.yml", {"saveos_agent_offsite_bucket": BUCKET})
    refused = _playbook(fleet, own, "--limit", "lab2", "--check")
    assert refused.returncode != 0
    assert "holds no S3 credentials" in refused.stdout, refused.stdout[-3000:]

    for rel, data in FILES.items():
        made = fleet.lab_ssh_stdin("lab2", f"mkdir -p {SOURCES}/r9c && cat > {SOURCES}/{rel}", data)
        assert made.returncode == 0, made.stderr
    rc, out = fleet.agent("lab2", "backup")
    assert rc == 0, out

    # The central prune verifies the repository, then the server copies it: locked, reported.
    with CmdlineWatcher() as watcher:
        rc, result = _prune(fleet, inventory, "lab2")
    assert rc == 0, result
    copy = result["offsite"]
    assert copy["result"] == "ok" and copy["server"] == fleet.server, copy
    assert copy["objects_uploaded"] == copy["objects"] > 0, copy
    assert any("saveos_offsite sync" in c for c in watcher.seen), "the watcher saw no sync"
    assert not [c for c in watcher.seen if s3.secret_key in c or s3.access_key in c]
    assert s3.secret_key not in "".join(fleet.outputs)
    agent = {a["name"]: a for a in json.loads(fleet.saveos("status", "--json").stdout)["agents"]}
    assert agent["lab2"]["last_offsite_result"] == "ok", agent["lab2"]
    assert agent["lab2"]["last_offsite_at"] is not None

    # The hosts hold no S3 credential: not on disk, not in any process's environment or argv.
    for host in fleet.hosts:
        assert _no_s3_secret_on(fleet, host, s3) == [], host
    assert fleet.sh("lab2", f"cat {_credentials(fleet)}").returncode != 0  # hidden from hosts
    # ...nor may the host vouch for a copy it cannot make: its own offsite report is refused.
    token = fleet.sh("lab2", "cat /etc/saveos/token").stdout.strip()
    forged = {
        "report_id": "r9c-forged-" + token[-6:].replace("_", "x").replace("-", "x"),
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
        "result": "ok", "message": "all fine, trust me",
    }  # fmt: skip
    with httpx.Client(base_url=fleet.api.url, verify=fleet.api.server.verify) as http:
        answer = http.post("/api/v1/reports/offsite", json=forged,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert answer.status_code == 403 and fleet.server in answer.text, answer.text

    # The copy is locked (COMPLIANCE, 30 days) and opens byte for byte with the escrowed key.
    proof = fleet.saveos("escrow", "verify", "--inventory", str(inventory), "--limit", "lab2",
                         "--method", "offsite", "--json", "--no-report")  # fmt: skip
    assert proof.returncode == 0, proof.stdout + proof.stderr
    hosts = {h.name: h for h in inventory_hosts.load_hosts(inventory)}
    settings = offsite.settings("lab2", offsite_location(hosts))
    locked = _offsite_verify(fleet, inventory)
    assert locked["status"] == "ok", locked
    assert locked["objects_locked"] == locked["objects"] == copy["objects"]
    good = datetime.now(UTC)
    archives = _restore_and_compare(fleet, settings, tmp_path / "first")

    # Root on the host, straight at the store (no credentials to steal there): deleting a
    # locked version is refused; an overwrite only adds a version, which the next copy replaces.
    version = s3.client().list_object_versions(Bucket=BUCKET, Prefix=f"{PREFIX}/lab2/config")
    config_version = version["Versions"][0]["VersionId"]
    key_url = f"{s3.url}/{BUCKET}/{PREFIX}/lab2/config"
    assert _host_http(fleet, "lab2", "DELETE", f"{key_url}?versionId={config_version}") == 403
    with pytest.raises(Exception, match="AccessDenied"):  # COMPLIANCE: not even the server's
        s3.client().delete_object(
            Bucket=BUCKET, Key=f"{PREFIX}/lab2/config", VersionId=config_version,
            BypassGovernanceRetention=True,
        )  # fmt: skip
    if _host_http(fleet, "lab2", "PUT", key_url, b"garbage") == 200:  # the store took it
        assert "config" in _offsite_verify(fleet, inventory, expect=2)["unlocked"]
    restored = replicate.fetch(settings, str(tmp_path / "as-of"), as_of=good)
    assert restored["status"] == "ok", restored
    rc, again = _prune(fleet, inventory, "lab2")
    assert rc == 0 and again["offsite"]["result"] == "ok", again
    assert _offsite_verify(fleet, inventory)["status"] == "ok"

    # A tampered repository is never copied over the good copy: lab3 copied once, then root
    # there logs a delete; the central run refuses and the copy stays as it was.
    rc, out = fleet.agent("lab3", "backup")
    assert rc == 0, out
    rc, first = _prune(fleet, inventory, "lab3")
    assert rc == 0 and first["offsite"]["result"] == "ok", first
    before = _versions(s3, "lab3")
    attacked = fleet.sh("lab3", PRELUDE + "borg delete --glob-archives '*' $R; echo rc=$?")
    assert re.findall(r"rc=(\d+)", attacked.stdout)[-1] == "0", attacked.stdout + attacked.stderr
    rc, found = _prune(fleet, inventory, "lab3")
    assert rc == 2 and found["result"] == "tampered", found
    assert found["offsite"]["result"] == "skipped", found
    assert "tampering found" in found["offsite"]["message"]
    assert _versions(s3, "lab3") == before
    lab3 = offsite.settings("lab3", offsite_location(hosts, "lab3"))
    lab3_archives = _restore_and_compare(fleet, lab3, tmp_path / "lab3")
    assert lab3_archives, "the good copy holds the archives the attacker deleted"

    # Leave the shared fleet as found: lab3 rolled back, its borg cache reset, backing up.
    rolled = fleet.saveos("repo", "rollback", "lab3", "--inventory", str(inventory), "--force")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert fleet.sh("lab3", "rm -rf /root/.cache/borg /root/.config/borg/security").returncode == 0
    rc, out = fleet.agent("lab3", "backup")
    assert rc == 0, out
    figures.append(
        f"R9c server-made offsite copy: lab2 {copy['objects']} objects "
        f"({copy['bytes_uploaded']} bytes) copied by {fleet.server} in {copy['duration_s']:.1f}s, "
        f"COMPLIANCE-locked ({locked['objects_locked']}/{locked['objects']}), {len(archives)} "
        "archive(s) restored byte for byte with the escrowed key; no S3 key on any host; a "
        "delete from the host refused (403); lab3 tampered -> not copied, its copy unchanged "
        f"({len(before)} versions)"
    )


def _offsite_verify(fleet, inventory: Path, expect: int = 0) -> dict:
    """`saveos offsite verify` for lab2 from the controller: its one result."""
    run = fleet.saveos("offsite", "verify", "-i", str(inventory), "--limit", "lab2", "--json")
    assert run.returncode == expect, run.stdout + run.stderr
    return json.loads(run.stdout)["results"][0]


def offsite_location(hosts: dict, name: str = "lab2"):
    return repo_servers.location(hosts[name], hosts)


def _restore_and_compare(fleet, settings, work: Path) -> list[str]:
    """Fetch the copy on the controller, import the escrowed key, and extract the newest archive:
    every file equals the host's own (sha256). Returns the archives in the copy."""
    repo = work / "repo"
    fetched = replicate.fetch(settings, str(repo))
    assert fetched["status"] == "ok", fetched
    key = fleet.escrow / settings.host / "key.export"
    imported = fleet.borg_on_copy(settings.host, repo, "key", "import", str(repo), str(key))
    assert imported.returncode == 0, imported.stderr
    listed = fleet.borg_on_copy(settings.host, repo, "list", "--json", str(repo))
    assert listed.returncode == 0, listed.stderr
    archives = [a["name"] for a in json.loads(listed.stdout)["archives"]]
    out = work / "out"
    out.mkdir()
    got = fleet.borg_on_copy(settings.host, repo, "extract", f"{repo}::{archives[-1]}", cwd=out)
    assert got.returncode == 0, got.stderr
    extracted = out / SOURCES.lstrip("/")
    sums = fleet.sh(settings.host, f"cd {SOURCES} && find . -type f -exec sha256sum {{}} +")
    expected = {line.split(None, 1)[1][2:]: line.split()[0] for line in sums.stdout.splitlines()}
    actual = {
        str(p.relative_to(extracted)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in extracted.rglob("*")
        if p.is_file()
    }
    assert actual == expected
    return archives


RECOVER = {"r9c-recover/app.conf": b"version = 1\n", "r9c-recover/blob.bin": b"\x01" * 70000}


def _sums(fleet, host: str, root: str) -> dict[str, str]:
    """relative path -> sha256 of every regular file under root on a lab host."""
    listed = fleet.sh(host, f"cd {root} && find . -type f -exec sha256sum {{}} +")
    assert listed.returncode == 0, listed.stderr
    return {line.split(None, 1)[1][2:]: line.split()[0] for line in listed.stdout.splitlines()}


def _recover(fleet, inventory: Path, tmp: Path, target: str, *args: str):
    """`saveos recover --from lab1 --onto lab2` with the controller's temp dir in `tmp`."""
    tmp.mkdir(exist_ok=True)
    argv = [*[a for a in args if a == "-v"], "recover", "-i", str(inventory), "--from", "lab1",
            "--onto", "lab2", "--target", target, *[a for a in args if a != "-v"]]  # fmt: skip
    run = cli_support.saveos(*argv, env=fleet.env | {"TMPDIR": str(tmp)}, timeout=900)
    fleet.outputs.append(run.stdout + run.stderr)
    assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert list(tmp.iterdir()) == [], "the fetched copy stayed on the controller"
    return run


def _result(run) -> dict:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout)


def test_r9c_recover_from_the_server_made_copy_when_the_server_is_lost(
    repo_fleet, s3, inventory, tmp_path, figures
):
    """repo1 is lost (its lab1 repository gone, then the machine down): lab1's files come back
    onto lab2 from the copy repo1 made, fetched by the controller (lab2 holds no S3 key), every
    file's sha256 verified; `--at` gets the copy as it stood then, whatever was uploaded since."""
    fleet = repo_fleet
    tmp = tmp_path / "controller-tmp"
    copies, sums, moments = [], [], []
    for version in (1, 2):
        for rel, data in RECOVER.items():
            data = data.replace(b"1", str(version).encode()) if rel.endswith(".conf") else data
            made = fleet.lab_ssh_stdin(
                "lab1", f"mkdir -p {SOURCES}/r9c-recover && cat > {SOURCES}/{rel}", data
            )
            assert made.returncode == 0, made.stderr
        rc, out = fleet.agent("lab1", "backup")
        assert rc == 0, out
        rc, pruned = _prune(fleet, inventory, "lab1")
        assert rc == 0 and pruned["offsite"]["result"] == "ok", pruned
        copies.append(pruned["offsite"])
        sums.append(_sums(fleet, "lab1", SOURCES))
        time.sleep(1.1)  # S3 stamps versions to the second
        moments.append(datetime.now(UTC).isoformat())
        time.sleep(1.1)
    assert sums[0] != sums[1]

    repos = "/srv/saveos-repos"
    lost = fleet.sh(fleet.server, f"mv {repos}/lab1 {repos}/.lab1-lost")
    assert lost.returncode == 0, lost.stderr
    try:
        # The server answers but lab1's repository is gone there: the offsite copy, at -v.
        target = "/srv/r9c-recovered"
        with CmdlineWatcher() as watcher:
            run = _recover(fleet, inventory, tmp, target, "-v", "--json")
        got = latest = _result(run)
        assert got["status"] == "ok" and got["method"] == "offsite", got
        assert got["offsite"] == f"s3://{BUCKET}/{PREFIX}/lab1/" and got["at"] is None, got
        assert f"{fleet.server} has no repository at {repos}/lab1" in got["server_lost"], got
        assert got["files_verified"] == len(_sums(fleet, "lab2", target + SOURCES)) > 0
        assert _sums(fleet, "lab2", target + SOURCES) == sums[1]
        # S3 keys: not in any argv, not in what the CLI printed at -v, nowhere on lab2
        keys = (s3.access_key, s3.secret_key)
        assert watcher.snapshots > 5 and any("tar -xf -" in c for c in watcher.seen)
        assert not [c for c in watcher.seen if any(k in c for k in keys)]
        assert not any(k in run.stdout + run.stderr for k in keys)
        assert _no_s3_secret_on(fleet, "lab2", s3) == []
        passphrase = (fleet.escrow / "lab1" / "passphrase").read_text().strip()
        assert passphrase not in run.stdout + run.stderr
        assert fleet.sh("lab2", "ls -A /var/lib/saveos/recover | wc -l").stdout.strip() == "0"

        # The machine is gone too. A later upload that went bad (garbage over the copy's
        # config, as stolen server credentials could write): the newest copy fails, clearly;
        # --at before it gets the copy as it stood, byte for byte, and earlier still the first.
        fleet.lab.stop_host(fleet.server)
        s3.client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/lab1/config", Body=b"garbage")
        bad = _recover(fleet, inventory, tmp, "/srv/r9c-bad")
        assert bad.returncode == 2, bad.stdout + bad.stderr
        said = " ".join(bad.stdout.split() + bad.stderr.split())
        assert f"{fleet.server} does not answer" in said and "sha256 mismatch" in said, said
        restored = {}
        for i, moment in enumerate(moments):
            where = f"/srv/r9c-at-{i}"
            run = _recover(fleet, inventory, tmp, where, "--at", moment, "--json")
            got = _result(run)
            assert got["at"] and got["method"] == "offsite", got
            restored[i] = _sums(fleet, "lab2", where + SOURCES)
            assert restored[i] == sums[i], i
        assert restored[0] != restored[1]
        human = _recover(fleet, inventory, tmp, "/srv/r9c-human", "--at", moments[0])
        assert human.returncode == 0, human.stdout + human.stderr
        assert f"offsite copy s3://{BUCKET}/{PREFIX}/lab1/ as of" in " ".join(human.stdout.split())

        # Bad input: one clear line and a non-zero exit each, nothing restored.
        empty = _inventory(fleet, s3, tmp_path / "empty.yml")
        prefix = "saveos_repo_server_offsite_prefix: "
        empty.write_text(empty.read_text().replace(prefix + PREFIX, prefix + "nothing-here"))
        cases = [
            (inventory, ["--from", "lab9"], 1, "host 'lab9' is not in"),
            (inventory, ["--at", "2000-01-01T00:00:00Z"], 2, "as of 2000-01-01T00:00:00Z (its "
             f"first object is from {datetime.now(UTC):%Y-%m-%d}"),
            (inventory, ["--at", "soon"], 1, "--at 'soon' is not an ISO 8601 timestamp"),
            (inventory, ["--method", "server"], 2, f"{fleet.server} does not answer"),
            (empty, [], 2, f"no offsite copy at s3://{BUCKET}/nothing-here/lab1/"),
            (fleet.inventory, [], 2, "and lab1 has no offsite copy to fall back on"),
        ]  # fmt: skip
        for inv, args, code, message in cases:
            run = _recover(fleet, inv, tmp, "/srv/r9c-refused", *args)
            said = " ".join(run.stdout.split() + run.stderr.split())
            assert run.returncode == code and message in said, (args, said)
        assert fleet.sh("lab2", "test ! -e /srv/r9c-refused/srv").returncode == 0
    finally:
        fleet.lab.up(len(fleet.hosts), repo_servers=1)
        fleet.sh(fleet.server, f"test -e {repos}/lab1 || mv {repos}/.lab1-lost {repos}/lab1")
        fleet.sh("lab2", "rm -rf /srv/r9c-*")
    rc, out = fleet.agent("lab1", "backup")  # the fleet as found: lab1 backs up to repo1 again
    assert rc == 0, out
    figures.append(
        f"R9c recover with {fleet.server} lost: lab1's {latest['files_verified']} files onto lab2 "
        f"from the server-made copy, sha256 verified; --at the first and second copy "
        f"({copies[0]['objects']}, {copies[1]['objects']} objects) give each as it stood after "
        "garbage was uploaded over it; no S3 key on lab2 or in any argv"
    )
