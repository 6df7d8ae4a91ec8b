"""R9: root on a backed-up host, with everything it holds (its key, its passphrase, its agent),
cannot destroy its history on the repository server, nor reach another host's repository.

Every attempt fails, or is only logged by the append-only server: the segments that existed
stay byte for byte; the next central prune (issue 15) finds the tampering and deletes nothing,
the host is `tampered`, the rollback is refused while the host can still write, and after
`saveos repo revoke` + `saveos repo rollback` every archive that existed is restorable from the
server byte for byte; redeployed, the host backs up again and the next prune is clean. The
other hosts' repositories do not change at all.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

SOURCES = "/srv/accept"

# The host's own Borg credentials and SSH command, as the agent uses them.
PRELUDE = """
set +e
exec </dev/null
cfg=/etc/saveos/agent.json
R=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["repository"])' $cfg)
RSH=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rsh"])' $cfg)
export BORG_RSH="$RSH" BORG_PASSCOMMAND='cat /etc/saveos/passphrase' BORG_EXIT_CODES=legacy
export BORG_DELETE_I_KNOW_WHAT_I_AM_DOING=YES BORG_CHECK_I_KNOW_WHAT_I_AM_DOING=YES
SERVER=${R#ssh://}; SERVER=${SERVER%%/*}; HOSTPART=${SERVER%:*}; PORT=${SERVER##*:}
ROOT=${R%/*}
"""

# (what root tries, the command on lab1, kind). A "borg" attempt must fail or change nothing that
# was there (it is then only logged); an "ssh" one must never reach anything but borg serve.
ATTACKS = (
    ("borg delete every archive", "borg delete --glob-archives '*' $R", "borg"),
    ("borg prune --keep-last 1", "borg prune --keep-last 1 $R", "borg"),
    ("borg compact", "borg compact --threshold 0 $R", "borg"),
    ("borg delete the repository", "borg delete $R", "borg"),
    ("borg check --repair", "borg check --repair $R", "borg"),
    ("borg key change-passphrase", "BORG_NEW_PASSPHRASE=stolen borg key change-passphrase $R",
     "borg"),
    ("borg config append_only 0", "borg config $R append_only 0", "borg"),
    ("read another host's repository", "borg list $ROOT/lab2", "borg"),
    ("write another host's repository", "borg delete --glob-archives '*' $ROOT/lab3", "borg"),
    ("create a repository beside it", "borg init -e none $ROOT/r9-extra", "borg"),
    ("open the repositories' root", "borg list $ROOT", "borg"),
    ("a shell on the server", "$RSH -p $PORT $HOSTPART 'id; echo SHELL-OK'", "ssh"),
    ("a pty on the server", "$RSH -tt -p $PORT $HOSTPART /bin/sh -c 'echo SHELL-OK'", "ssh"),
    ("port forwarding", "$RSH -W 127.0.0.1:$PORT -p $PORT $HOSTPART", "ssh"),
    ("write a repository file (scp)", "echo SHELL-OK > /tmp/r9-x && scp -o IdentitiesOnly=yes "
     "-i /etc/saveos/ssh/id_ed25519 -o UserKnownHostsFile=/etc/saveos/ssh/known_hosts -P $PORT "
     "/tmp/r9-x $HOSTPART:$ROOT/lab1/config", "ssh"),
)  # fmt: skip
# Borg's files that each transaction rewrites (rebuilt by the rollback), the key's (config) and
# the transaction log (only ever appended to: checked apart).
DERIVED = re.compile(r"^(index|hints|integrity)\.\d+$|^config$|^nonce$|^transactions$")


def last_transaction(fleet, host: str) -> int:
    text = (fleet.repository_dir(host) / "transactions").read_text()
    return int(re.findall(r"^transaction (\d+),", text, re.MULTILINE)[-1])


def _status_of(shown) -> dict[str, str]:
    return {a["name"]: a["status"] for a in json.loads(shown.stdout)["agents"]}


def test_r9_root_on_a_host_cannot_destroy_its_history(repo_fleet, tmp_path, figures):
    fleet = repo_fleet
    for n in (1, 2):
        fleet.sh("lab1", f"echo round {n} > {SOURCES}/round-{n}")
        rc, out = fleet.agent("lab1", "backup")
        assert rc == 0, out
    inventory = str(fleet.inventory)
    # A central run first (issue 15): the state the next one holds the repository to.
    first = fleet.saveos("prune", "--inventory", inventory, "--limit", "lab1", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    others = {h: fleet.repository_files(h) for h in ("lab2", "lab3")}
    before = fleet.repository_files("lab1")
    history = {p: d for p, d in before.items() if not DERIVED.match(p.rsplit("/", 1)[-1])}
    transaction = last_transaction(fleet, "lab1")
    snapshot = fleet.copy_repository("lab1", tmp_path / "before")
    listed = fleet.borg_on_copy("lab1", snapshot, "list", "--json", str(snapshot))
    archives = [a["name"] for a in json.loads(listed.stdout)["archives"]]
    assert len(archives) >= 2

    outcomes = {}
    for what, command, kind in ATTACKS:
        r = fleet.sh("lab1", PRELUDE + command + '; echo "rc=$?"', timeout=300)
        rc = int(re.findall(r"rc=(\d+)", r.stdout)[-1])
        assert "SHELL-OK" not in r.stdout and "uid=" not in r.stdout, (what, r.stdout)
        outcomes[what] = "logged" if kind == "borg" and rc == 0 else "refused"
    after = fleet.repository_files("lab1")
    # Append-only: every segment and log line that was there is still there, unchanged.
    assert {p: after.get(p) for p in history} == history
    transactions = (fleet.repository_dir("lab1") / "transactions").read_text()
    assert transactions.startswith((snapshot / "transactions").read_text())
    assert {h: fleet.repository_files(h) for h in others} == others
    assert not fleet.repository_dir("r9-extra").exists()
    assert "SHELL-OK" not in (fleet.repository_dir("lab1") / "config").read_text()
    # The escrow proof notices that the repository no longer opens with the escrowed secrets.
    proof = fleet.saveos("escrow", "verify", "--inventory", str(fleet.inventory),
                         "--limit", "lab1", "--method", "live", "--no-report")  # fmt: skip
    assert proof.returncode == 2, proof.stdout

    # Central retention (issue 15): the next prune finds the tampering and deletes nothing.
    pruned = fleet.saveos("prune", "--inventory", inventory, "--limit", "lab1", "--json")
    assert pruned.returncode == 2, pruned.stdout + pruned.stderr
    found = json.loads(pruned.stdout)["results"][0]
    assert found["result"] == "tampered" and found["pruned"] == [], found
    kinds = sorted({f["kind"] for f in found["findings"]})
    assert {p: fleet.repository_files("lab1").get(p) for p in history} == history
    shown = fleet.saveos("status", "--json")
    assert shown.returncode == 2
    assert {a["name"]: a["status"] for a in json.loads(shown.stdout)["agents"]}[
        "lab1"
    ] == "tampered"
    refused_rollback = fleet.saveos("repo", "rollback", "lab1", "--inventory", inventory)
    assert refused_rollback.returncode == 2 and "can still write" in refused_rollback.stderr
    revoked = fleet.saveos("repo", "revoke", "lab1", "--inventory", inventory)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    rolled = fleet.saveos("repo", "rollback", "lab1", "--inventory", inventory, "--json")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    rolled_back = json.loads(rolled.stdout)
    assert rolled_back["transaction"] >= transaction  # the central run's, or a later good one
    shown = fleet.saveos("status", "--json")
    assert {a["name"]: a["status"] for a in json.loads(shown.stdout)["agents"]}[
        "lab1"
    ] != "tampered"
    # The host's own borg cache and security records describe the attacked manifest.
    assert fleet.sh("lab1", "rm -rf /root/.cache/borg /root/.config/borg/security").returncode == 0
    restored = fleet.copy_repository("lab1", tmp_path / "after")
    listed = fleet.borg_on_copy("lab1", restored, "list", "--json", str(restored))
    assert [a["name"] for a in json.loads(listed.stdout)["archives"]] == archives
    identical = 0
    for archive in archives:
        want = fleet.borg_on_copy(
            "lab1", snapshot, "list", "--json-lines", "--format", "{sha256}",
            f"{snapshot}::{archive}",
        )  # fmt: skip
        expected = {
            i["path"]: i["sha256"] for i in map(json.loads, want.stdout.splitlines())
            if i["type"] == "-"
        }  # fmt: skip
        out = tmp_path / f"x-{archive}"
        out.mkdir()
        got = fleet.borg_on_copy("lab1", restored, "extract", f"{restored}::{archive}", cwd=out)
        assert got.returncode == 0, got.stderr
        actual = {p: fleet.sha256(out / p) for p in expected}
        assert actual == expected, archive
        identical += len(expected)
        shutil.rmtree(out)
    # Redeployed (its write access back), the host backs up again with the escrowed passphrase,
    # and the next central prune applies the retention normally.
    redeployed = fleet.playbook("deploy.yml", "--limit", "lab1,repo1")
    assert redeployed.returncode == 0, redeployed.stdout[-3000:]
    rc, out = fleet.agent("lab1", "backup")
    assert rc == 0, out
    again = fleet.saveos("prune", "--inventory", inventory, "--limit", "lab1", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["results"][0]["result"] == "ok"
    refused = sum(1 for v in outcomes.values() if v == "refused")
    logged = [k for k, v in outcomes.items() if v == "logged"]
    figures.append(
        f"R9 append-only: {len(ATTACKS)} attacks by root on lab1 -> {refused} refused, "
        f"{len(logged)} only logged ({', '.join(logged)}); {len(history)} history files unchanged; "
        f"{len(archives)} archives ({identical} files) restorable byte for byte after rollback; "
        f"lab2/lab3 repositories untouched ({sum(map(len, others.values()))} files); "
        f"central prune refused ({', '.join(kinds)}), rollback to transaction "
        f"{rolled_back['transaction']} in {rolled_back['duration_s']:.1f}s"
    )
