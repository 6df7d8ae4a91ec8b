"""Issue 14: the fleet backs up to a SaveOS repository server (append-only for each host).

One deployed lab for the module (3 hosts + repo1, see conftest.repo_fleet): idempotent deploy,
keys and pinning, backup, status and metrics, restore; then a server that is down, a wrong host
key and a full quota; last, a host lost and recovered from the server (it wrecks lab3).
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml
from ansible_support import recap

from saveos_lab import repo_servers as lab_repo

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

SOURCES = "/srv/accept"


def status_of(fleet) -> dict[str, dict]:
    shown = fleet.saveos("status", "--json")
    return {a["name"]: a for a in json.loads(shown.stdout)["agents"]}


def backup(fleet, host: str) -> tuple[int, dict]:
    return fleet.agent(host, "backup")


def test_deploy_registers_append_only_keys_pins_the_server_and_is_idempotent(repo_fleet):
    fleet = repo_fleet
    # New hosts: their keys registered with one call for the server, each host finished by its
    # one host call (no task-by-task registration, no second call).
    first = fleet.first_deploy
    assert "TASK [saveos_agent : Register the new hosts' keys on their repository servers" in first
    assert "Register the host's key and repository on the repository server" not in first
    assert "TASK [saveos_agent : Converge the host again]" not in first, first[-3000:]
    again = fleet.playbook("deploy.yml")
    assert again.returncode == 0, again.stdout[-3000:]
    counts = recap(again)
    assert set(counts) == {*fleet.hosts, fleet.server}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    checked = fleet.playbook("deploy.yml", "--check")
    assert all(c["changed"] == 0 for c in recap(checked).values()), checked.stdout[-3000:]

    keys = fleet.sh(fleet.server, "cat /var/lib/saveos-repo/.ssh/authorized_keys").stdout
    server_key = fleet.sh(fleet.server, f"cat {lab_repo.HOST_KEY_FILE}").stdout.split()[:2]
    repo1 = next(h for h in fleet.lab.hosts() if h.name == fleet.server)
    for host in fleet.hosts:
        public = fleet.sh(host, "cat /etc/saveos/ssh/id_ed25519.pub").stdout.split()[:2]
        line = (
            f'command="borg serve --append-only --restrict-to-repository /srv/saveos-repos/{host}"'
            f",restrict {' '.join(public)} saveos-client:{host}"
        )
        assert line in keys.splitlines(), keys
        private = fleet.sh(host, "stat -c %a /etc/saveos/ssh/id_ed25519").stdout.strip()
        assert private == "600"
        pinned = fleet.sh(host, "cat /etc/saveos/ssh/known_hosts").stdout.strip()
        assert pinned == f"[{repo1.address}]:{repo1.port} {' '.join(server_key)}"
        assert fleet.sh(host, "test ! -e /var/lib/saveos/repo").returncode == 0
        config = json.loads(fleet.sh(host, "cat /etc/saveos/agent.json").stdout)
        assert config["repository"] == (
            f"ssh://saveos-repo@{repo1.address}:{repo1.port}/srv/saveos-repos/{host}"
        )
        assert "BatchMode=yes" in config["rsh"] and "StrictHostKeyChecking=yes" in config["rsh"]
    # The controller's admin key (central jobs): private on the controller, full access there.
    admin = fleet.work / "data" / "repo-admin" / "id_ed25519"
    assert admin.stat().st_mode & 0o777 == 0o600
    admin_public = " ".join(admin.with_suffix(".pub").read_text().split()[:2])
    admin_line = (
        f'command="borg serve --restrict-to-path /srv/saveos-repos",restrict {admin_public} '
        "saveos-admin:controller"
    )
    assert admin_line in keys.splitlines(), keys
    # The private keys never left their hosts: not on the server, not in the escrow store.
    body = fleet.sh("lab1", "sed -n 4p /etc/saveos/ssh/id_ed25519").stdout.strip()
    assert len(body) > 40
    places = "/etc /srv /root /home /opt /var/lib/saveos-repo"
    found = fleet.sh(fleet.server, f"grep -rlsF '{body}' {places} || true")
    assert found.stdout == "", found.stdout
    assert sorted(p.name for p in (fleet.escrow / "lab1").iterdir()) == [
        "key.export",
        "passphrase",
    ]


def test_backup_to_the_server_status_metrics_and_restore(repo_fleet):
    fleet = repo_fleet
    done = fleet.saveos("backup", "--inventory", str(fleet.inventory))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    agents = status_of(fleet)
    for host in fleet.hosts:
        agent = agents[host]
        assert agent["status"] == "ok", agent
        assert (agent["repository_server"], agent["repository_path"]) == (
            fleet.server,
            f"/srv/saveos-repos/{host}",
        )
        assert agent["repository_used_bytes"] > 300_000  # the random file at least
        # The host appended only: no prune or compact from it (retention is central).
        log = fleet.sh(host, "cat /var/log/saveos/agent.log").stdout
        assert "borg create" in log and "borg prune" not in log and "borg compact" not in log
    metrics = httpx.get(
        fleet.api.url + "/metrics",
        headers=fleet.api.admin,
        timeout=10,
        verify=fleet.api.server.verify,
    ).text
    assert re.search(
        r'saveos_agent_repository_used_bytes\{agent="lab1",path="/srv/saveos-repos/lab1",'
        r'server="repo1"\} [1-9]',
        metrics,
    ), metrics[-2000:]
    shown = fleet.saveos("status")
    assert "repo1" in shown.stdout

    target = "/srv/restored-from-repo1"
    restored = fleet.saveos(
        "restore", "--inventory", str(fleet.inventory), "lab2", "--archive", "latest",
        "--path", SOURCES, "--target", target,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-2000:]
    digest = "cd {0} && find . -type f -print0 | sort -z | xargs -0 sha256sum"
    original = fleet.sh("lab2", digest.format(SOURCES)).stdout
    copy = fleet.sh("lab2", digest.format(target + SOURCES)).stdout
    assert original and original == copy
    assert "random.bin" in copy


def test_a_server_down_a_wrong_host_key_and_a_full_quota_fail_clearly(repo_fleet):
    fleet = repo_fleet
    # Down: the backup fails naming the server, is reported, the host shows failing.
    before = fleet.agent("lab1", "list")[1]["archives"]
    fleet.lab.stop_host(fleet.server)
    try:
        rc, out = backup(fleet, "lab1")
        assert rc == 2 and out["status"] == "error", out
        assert out["message"].startswith("repository server: it does not answer"), out
        assert out["reported"] is True
        assert status_of(fleet)["lab1"]["status"] == "failing"
    finally:
        fleet.lab.up(len(fleet.hosts), repo_servers=1)
    rc, out = backup(fleet, "lab1")
    assert rc == 0, out
    assert status_of(fleet)["lab1"]["status"] == "ok"
    after = [a["name"] for a in fleet.agent("lab1", "list")[1]["archives"]]
    assert {a["name"] for a in before} <= set(after)  # nothing lost

    # Another host key answers at the server's address: refused before anything is sent.
    known = "/etc/saveos/ssh/known_hosts"
    other = (
        f"cp {known} {known}.good && ssh-keygen -q -t ed25519 -N '' -f /tmp/k14 && "
        f"echo \"$(cut -d' ' -f1 {known}.good) $(cut -d' ' -f1,2 /tmp/k14.pub)\" > {known} && "
        "rm -f /tmp/k14 /tmp/k14.pub"
    )
    assert fleet.sh("lab2", other).returncode == 0
    try:
        rc, out = backup(fleet, "lab2")
        assert rc == 2, out
        assert "host key does not match the one pinned" in out["message"], out
        assert status_of(fleet)["lab2"]["status"] == "failing"
    finally:
        fleet.sh("lab2", f"mv {known}.good {known}")
    assert backup(fleet, "lab2")[0] == 0

    # Full: a 10M quota (borg's minimum) declared in the inventory, and 12 MB more to back up.
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["all"]["children"]["lab"]["hosts"]["lab3"]["saveos_agent_repository_quota"] = "10M"
    fleet.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    limited = fleet.playbook("deploy.yml", "--limit", "lab3,repo1")
    assert limited.returncode == 0, limited.stdout[-3000:]
    keys = fleet.sh(fleet.server, "cat /var/lib/saveos-repo/.ssh/authorized_keys").stdout
    assert "/srv/saveos-repos/lab3 --storage-quota 10M" in keys
    fleet.sh("lab3", f"head -c 12000000 /dev/urandom > {SOURCES}/big.bin")
    try:
        rc, out = backup(fleet, "lab3")
        assert rc == 2, out
        assert out["message"].startswith("repository server: it is full"), out
        assert status_of(fleet)["lab3"]["status"] == "failing"
        assert fleet.agent("lab3", "list")[0] == 0  # the archives before are still there
    finally:
        fleet.sh("lab3", f"rm -f {SOURCES}/big.bin")
    rc, out = backup(fleet, "lab3")  # what fits under the quota backs up again
    assert rc == 0, out
    agent = status_of(fleet)["lab3"]
    assert agent["status"] == "ok" and agent["repository_quota_bytes"] == 10_000_000


def test_losing_a_host_and_recovering_it_from_the_server(repo_fleet, figures):
    """lab3's disk is gone; a new lab3 gets every file back from repo1 (no S3), verified."""
    fleet = repo_fleet
    assert backup(fleet, "lab3")[0] == 0
    digest = "cd {0} && find . -type f -print0 | sort -z | xargs -0 sha256sum"
    before = fleet.sh("lab3", digest.format(SOURCES)).stdout
    assert "random.bin" in before
    fleet.lab.up(len(fleet.hosts) - 1, repo_servers=1)  # lab3 and all it held are gone
    fleet.lab.up(len(fleet.hosts), repo_servers=1)  # a new, empty machine named lab3
    assert fleet.sh("lab3", "test ! -e /etc/saveos && test ! -e /srv/accept").returncode == 0

    target = "/srv/recovered"
    recovered = fleet.saveos(
        "recover", "--inventory", str(fleet.inventory), "--from", "lab3", "--onto", "lab3",
        "--target", target,
    )  # fmt: skip
    assert recovered.returncode == 0, recovered.stdout[-3000:] + recovered.stderr[-2000:]
    said = recovered.stdout.replace("\n", " ")
    assert "sha256 verified" in said and "RTO" in said, said
    rto = float(re.search(r"RTO ([0-9.]+)s", said).group(1))
    after = fleet.sh("lab3", digest.format(target + SOURCES)).stdout
    assert after == before
    # The grant was for this recovery only: gone from the server, its key gone from lab3.
    keys = fleet.sh(fleet.server, "cat /var/lib/saveos-repo/.ssh/authorized_keys").stdout
    assert "saveos-grant:" not in keys and keys.count("saveos-client:") == 3
    assert fleet.sh("lab3", "ls -A /var/lib/saveos/recover").stdout.strip() == ""
    files = before.count("\n")
    figures.append(
        f"R14 losing a host: lab3 recovered from repo1 onto a new lab3, {files} files sha256 "
        f"identical, RTO {rto:.1f} s, grant revoked"
    )
