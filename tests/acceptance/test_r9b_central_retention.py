"""Issue 15 on the repository-server lab (3 hosts + repo1, conftest.repo_fleet): the central
prune leaves exactly the archives the policy keeps on every host's repository and the API lists
the same set; bad input (escrow missing, server unreachable, an offsite lock shorter than the
retention) is one clear message naming the host, exit 2, and nothing deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from acceptance.conftest import CmdlineWatcher

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOSTS = ("lab2", "lab3")


def _inventory(fleet, path: Path, group_vars: dict, server_vars: dict | None = None) -> Path:
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["all"]["children"]["lab"]["vars"].update(group_vars)
    if server_vars:
        servers = inventory["all"]["children"]["saveos_repo_servers"]["hosts"]
        servers[fleet.server].update(server_vars)
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _archives(fleet, host: str, tmp_path: Path) -> list[str]:
    """The archives in the host's repository, read from a copy on the controller."""
    copy = fleet.copy_repository(host, tmp_path / f"copy-{host}-{len(list(tmp_path.iterdir()))}")
    listed = fleet.borg_on_copy(host, copy, "list", "--json", str(copy))
    assert listed.returncode == 0, listed.stderr
    shutil.rmtree(copy)
    return [a["name"] for a in json.loads(listed.stdout)["archives"]]


def _prune(fleet, inventory: Path, limit: str) -> tuple[int, dict]:
    run = fleet.saveos("prune", "--inventory", str(inventory), "--limit", limit, "--json")
    try:
        return run.returncode, json.loads(run.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"prune rc={run.returncode}: {run.stdout}\n{run.stderr}") from None


def test_retention_keeps_the_policy_and_bad_input_deletes_nothing(repo_fleet, tmp_path, figures):
    fleet = repo_fleet
    for host in HOSTS:
        for n in range(3):
            assert fleet.sh(host, f"echo {n} > /srv/accept/r9b-{n}").returncode == 0
            rc, out = fleet.agent(host, "backup")
            assert rc == 0, out
    before = {host: _archives(fleet, host, tmp_path) for host in HOSTS}
    assert all(len(names) >= 3 for names in before.values()), before
    keep_two = _inventory(
        fleet, tmp_path / "keep-two.yml", {"saveos_agent_retention": {"keep_last": 2}}
    )

    # escrow missing for lab3: named, exit 2, nothing deleted
    escrow = fleet.escrow / "lab3"
    escrow.rename(escrow.with_name("lab3.away"))
    try:
        rc, out = _prune(fleet, keep_two, "lab3")
    finally:
        escrow.with_name("lab3.away").rename(escrow)
    assert rc == 2
    (result,) = out["results"]
    assert result["result"] == "error" and result["message"].startswith("lab3: ")
    assert "escrowed passphrase" in result["message"], result

    # the repository server does not answer: named, exit 2
    down = _inventory(
        fleet, tmp_path / "down.yml", {"saveos_agent_retention": {"keep_last": 2}},
        {"ansible_port": 9},
    )  # fmt: skip
    rc, out = _prune(fleet, down, "lab2")
    assert rc == 2
    (result,) = out["results"]
    assert result["result"] == "error" and result["message"].startswith("lab2: "), result
    assert "unreachable" in result["message"] or "Connection refused" in result["message"]

    # an offsite lock shorter than the retention: refused before anything runs
    short = _inventory(
        fleet, tmp_path / "short-lock.yml",
        {"saveos_agent_retention": {"keep_daily": 7}, "saveos_agent_offsite_object_lock_days": 1},
    )  # fmt: skip
    rc, out = _prune(fleet, short, "lab2")
    assert rc == 2
    (result,) = out["results"]
    assert result["message"].startswith("lab2: the offsite Object Lock period (1 days)"), result
    assert {host: _archives(fleet, host, tmp_path) for host in HOSTS} == before

    # the policy: keep the last two, on every host's repository; the API lists the same set.
    # The escrowed passphrases never show in any process's argv, nor in what the run prints.
    with CmdlineWatcher() as watcher:
        run = fleet.saveos(
            "-v", "prune", "--inventory", str(keep_two), "--limit", ",".join(HOSTS), "--json"
        )
    rc, out = run.returncode, json.loads(run.stdout)
    assert rc == 0, out
    assert any("borg" in c and " prune " in c for c in watcher.seen), "the watcher saw no prune"
    for host in HOSTS:
        secret = (fleet.escrow / host / "passphrase").read_text().strip()
        assert not [c for c in watcher.seen if secret in c], host
        assert secret not in run.stdout + run.stderr
    for result in out["results"]:
        host = result["host"]
        assert result["result"] == "ok", result
        assert result["pruned"] == before[host][:-2]
        assert _archives(fleet, host, tmp_path) == before[host][-2:]
        listed = fleet.saveos("snapshots", host, "--json")
        assert listed.returncode == 0, listed.stderr
        shown = [s["archive"] for s in json.loads(listed.stdout)["snapshots"]]
        assert sorted(shown) == sorted(before[host][-2:]), (host, shown)
    per_repo = [r["duration_s"] for r in out["results"]]
    figures.append(
        f"central retention: keep_last 2 on {len(HOSTS)} repositories -> "
        f"{sum(len(r['pruned']) for r in out['results'])} archives pruned, the API lists the "
        f"same {2 * len(HOSTS)}; {out['wall_s']:.1f}s wall, "
        f"{sum(per_repo) / len(per_repo):.1f}s per repository; escrow missing / server down / "
        "lock shorter than retention: named, exit 2, nothing deleted"
    )
