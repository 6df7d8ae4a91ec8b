"""R1 restore round trip: seed a varied tree on every host, back up with `saveos backup`,
restore it with the agent to another directory, and compare every entry (type, mode, owner,
sha256 or link target). A byte flipped in a restored file must be caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acceptance.conftest import SOURCES

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]

TREE = Path(__file__).parent / "scripts" / "tree.py"
SEED = f"{SOURCES}/r1"
TARGET = "/srv/restore-r1"
FLIPPED = "level0/level1/plain-0.bin"  # 100 bytes
FLIP = (
    'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[50] ^= 1; '
    'open(p, "wb").write(b)'
)


def manifest(fleet, host: str, root: str) -> dict:
    r = fleet.sh(host, f"python3 {TREE} manifest {root}")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def differences(seeded: dict, restored: dict) -> list[str]:
    problems = [f"missing {p}" for p in seeded.keys() - restored.keys()]
    problems += [f"extra {p}" for p in restored.keys() - seeded.keys()]
    problems += [
        f"{p}: {seeded[p]} != {restored[p]}"
        for p in seeded.keys() & restored.keys()
        if seeded[p] != restored[p]
    ]
    return sorted(problems)


@pytest.fixture(scope="module")
def round_trip(fleet):
    seeded = {}
    for host in fleet.hosts:
        r = fleet.sh(host, f"rm -rf {SEED} {TARGET} && python3 {TREE} seed {SEED}")
        assert r.returncode == 0, r.stderr
        seeded[host] = manifest(fleet, host, SEED)
    backup = fleet.saveos("backup", "--inventory", str(fleet.inventory))
    assert backup.returncode == 0, backup.stdout[-4000:] + backup.stderr[-2000:]
    restored = {}
    for host in fleet.hosts:
        rc, last = fleet.agent(host, "status")
        archive = last["last_archive"]
        assert archive and archive in backup.stdout, (host, last, backup.stdout[-2000:])
        rc, out = fleet.agent(host, "restore", archive, SEED.lstrip("/"), "--target", TARGET)
        assert rc == 0 and out["status"] == "ok", out
        restored[host] = manifest(fleet, host, TARGET + SEED)
    return seeded, restored


def test_r1_every_host_restores_identical_files(fleet, round_trip, figures):
    seeded, restored = round_trip
    identical, files = 0, 0
    report = {}
    for host in fleet.hosts:
        kinds = {e["type"] for e in seeded[host].values()}
        assert kinds == {"file", "dir", "link"}, kinds
        assert any(e.get("size") == 0 for e in seeded[host].values())
        assert any(e["mode"] == "0o600" for e in seeded[host].values())
        report[host] = differences(seeded[host], restored[host])
        identical += not report[host]
        files += sum(e["type"] == "file" for e in seeded[host].values())
    assert identical == len(fleet.hosts), report
    entries = sum(len(m) for m in seeded.values())
    figures.append(
        f"R1 restore round trip: {identical}/{len(fleet.hosts)} hosts identical, "
        f"{files:,} files ({entries:,} entries incl. dirs and symlinks; sha256, mode, owner)"
    )


@pytest.mark.parametrize("damage", ["flip a byte", "chmod 644", "retarget symlink"])
def test_r1_negative_damage_in_the_restore_is_detected(fleet, round_trip, damage):
    seeded, _ = round_trip
    host = fleet.hosts[0]
    copy = "/srv/restore-r1-damaged"
    command = {
        "flip a byte": f"python3 -c '{FLIP}' {FLIPPED}",
        "chmod 644": "chmod 644 secret-0600",
        "retarget symlink": "ln -sfn plain-1.bin link-to-file",
    }[damage]
    path = {"flip a byte": FLIPPED}.get(damage)
    setup = f"rm -rf {copy} && cp -a {TARGET}{SEED} {copy} && cd {copy} && {command}"
    assert fleet.sh(host, setup).returncode == 0
    found = differences(seeded[host], manifest(fleet, host, copy))
    fleet.sh(host, f"rm -rf {copy}")
    assert len(found) == 1, found
    if path:
        assert found[0].startswith(path), found
