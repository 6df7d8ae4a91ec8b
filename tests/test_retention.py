"""Central retention against real borg repositories behind `borg serve --append-only`: the
prune keeps what the policy keeps, a delete the host logged is found before anything is made
permanent, and the rollback brings every archive back byte for byte."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from agent_support import tree_sha256
from retention_support import RepoServer

from saveos_cli.retention import borg, maintain, repo_files, verify

pytestmark = pytest.mark.borg


def _record(host) -> dict:
    """What the API holds: every archive the host reported as made, with its finish time."""
    return dict(host.made)


@pytest.fixture
def server(tmp_path):
    return RepoServer(tmp_path)


def test_prune_keeps_exactly_the_policy_and_a_clean_second_run_finds_nothing(server):
    host = server.add_host("lab1")
    for day in range(1, 6):
        host.backup(f"lab1-2026-11-0{day}", when=f"2026-11-0{day}T03:00:00")
    repo = server.repository(host, {"keep_daily": 3})
    first = maintain.maintain(repo, None, _record(host))
    assert first["result"] == "ok", first
    assert first["pruned"] == ["lab1-2026-11-01", "lab1-2026-11-02"]
    assert host.archives() == ["lab1-2026-11-03", "lab1-2026-11-04", "lab1-2026-11-05"]
    state = verify.RepoState.from_json(first["state"])
    assert set(state.archives) == set(host.archives())
    # the central prune and compact are not logged: the log holds the host's creates only
    assert state.transaction not in {t for t, _ in repo_files.transactions(str(host.repo))}
    assert not repo_files.segments(str(host.repo)).keys() - {int(n) for n in state.segments}

    host.backup("lab1-2026-11-06", when="2026-11-06T03:00:00")
    on_record = {k: v for k, v in _record(host).items() if k not in first["pruned"]}
    second = maintain.maintain(repo, state, on_record, verify_data=True)
    assert second["result"] == "ok", second
    assert second["pruned"] == ["lab1-2026-11-03"]
    assert second["verify_data"] is True
    assert host.archives() == ["lab1-2026-11-04", "lab1-2026-11-05", "lab1-2026-11-06"]


def test_logged_delete_and_prune_refused_then_rollback_restores_every_archive(server, tmp_path):
    host = server.add_host("lab2")
    for i in range(1, 4):
        host.backup(f"lab2-a{i}")
    repo = server.repository(host, {"keep_last": 10})
    state = verify.RepoState.from_json(maintain.maintain(repo, None, _record(host))["state"])
    host.backup("lab2-a4")
    digests = {name: host.sha256_of(name) for name in host.archives()}
    assert len(digests) == 4

    # the attacker, as root on lab2 with its key and passphrase: delete, prune, compact
    host.borg("delete", f"{host.url}::lab2-a1")
    host.borg("prune", "--keep-last", "1", host.url)
    host.borg("compact", host.url)
    assert host.archives() == ["lab2-a4"]
    segments_before = set(repo_files.segments(str(host.repo)))

    refused = maintain.maintain(repo, state, _record(host))
    assert refused["result"] == "tampered", refused
    kinds = {f["kind"] for f in refused["findings"]}
    assert kinds == {"archive_missing", "deletes_logged"}
    missing = next(f for f in refused["findings"] if f["kind"] == "archive_missing")
    assert set(missing["items"]) == {"lab2-a1", "lab2-a2", "lab2-a3"}
    assert refused["pruned"] == [] and refused["state"] is None
    # nothing compacted: every segment is still there
    assert set(repo_files.segments(str(host.repo))) == segments_before

    rolled = maintain.rollback(repo, state, _record(host), tmp_path / "scratch")
    assert rolled["result"] == "ok", rolled
    # the host's own cache is newer than the repository now (borg refuses it as "either an
    # attack or unsafe"); a fresh client reads it
    assert host.borg("list", host.url, check=False).returncode == 2
    src = host.src
    host.home = tmp_path / "fresh-client"
    assert host.archives() == ["lab2-a1", "lab2-a2", "lab2-a3", "lab2-a4"]
    for name, files in digests.items():
        assert host.sha256_of(name) == files, name
    target = tmp_path / "restore"
    target.mkdir()
    subprocess.run(
        ["borg", "extract", f"{host.url}::lab2-a2"],
        cwd=target,
        env=host.env(),
        check=True,
        capture_output=True,
    )
    restored = tree_sha256(target / str(src).lstrip("/"))
    expected_bin = hashlib.sha256(hashlib.sha256(b"lab2-a2").digest() * 4096).hexdigest()
    assert restored["lab2-a2.bin"] == expected_bin
    # the tampered state is kept aside as hard links, for the post-mortem
    assert os.path.isdir(rolled["kept"])

    # the next central run starts from the rollback and applies retention normally
    again = verify.RepoState.from_json(rolled["state"])
    repo.retention = {"keep_last": 2}
    pruned = maintain.maintain(repo, again, _record(host))
    assert pruned["result"] == "ok", pruned
    assert pruned["pruned"] == ["lab2-a1", "lab2-a2"]
    assert host.archives() == ["lab2-a3", "lab2-a4"]


def test_archive_on_record_but_gone_is_tampering_even_on_the_first_run(server):
    host = server.add_host("lab3")
    host.backup("lab3-a1")
    on_record = {**_record(host), "lab3-a0": host.made["lab3-a1"]}
    result = maintain.maintain(server.repository(host), None, on_record)
    assert result["result"] == "tampered"
    assert result["findings"][0]["items"] == ["lab3-a0"]


def test_a_changed_or_vanished_segment_is_tampering(server):
    host = server.add_host("lab4")
    host.backup("lab4-a1")
    host.backup("lab4-a2")
    repo = server.repository(host)
    state = verify.RepoState.from_json(maintain.maintain(repo, None, _record(host))["state"])
    numbers = sorted(repo_files.segments(str(host.repo)))
    path = repo_files.segments(str(host.repo))[numbers[0]]
    with open(path, "ab") as fh:
        fh.write(b"\0")
    result = maintain.maintain(repo, state, _record(host))
    assert result["result"] == "tampered"
    assert result["findings"][0]["kind"] == "segment_changed"
    os.unlink(path)
    result = maintain.maintain(repo, state, _record(host))
    assert result["findings"][0] == {
        "kind": "segment_missing",
        "message": f"segments removed: {numbers[0]}",
        "items": [numbers[0]],
    }


def test_scan_counts_client_deletes_but_not_manifest_rewrites(server):
    host = server.add_host("lab5")
    host.backup("lab5-a1")
    host.backup("lab5-a2")
    facts = repo_files.facts(str(host.repo))
    assert [t["deletes"] for t in facts["logged_since"]] == [0, 0]  # creates only
    host.borg("delete", f"{host.url}::lab5-a1")
    facts = repo_files.facts(str(host.repo), since=facts["logged_since"][-1]["id"])
    assert len(facts["logged_since"]) == 1 and facts["logged_since"][0]["deletes"] > 0


def test_a_host_that_changes_the_passphrase_is_caught_and_the_escrowed_key_restored(
    server, tmp_path
):
    host = server.add_host("lab6")
    host.backup("lab6-a1")
    repo = server.repository(host)
    state = verify.RepoState.from_json(maintain.maintain(repo, None, _record(host))["state"])
    host.backup("lab6-a2")
    changed = subprocess.run(
        ["borg", "key", "change-passphrase", host.url],
        env=host.env() | {"BORG_NEW_PASSPHRASE": "stolen"},
        capture_output=True,
        text=True,
    )
    assert changed.returncode == 0, changed.stderr  # append-only does not stop this
    result = maintain.maintain(repo, state, _record(host))
    assert result["result"] == "tampered", result
    assert [f["kind"] for f in result["findings"]] == ["key_changed"]
    rolled = maintain.rollback(repo, state, _record(host), tmp_path / "scratch")
    assert rolled["result"] == "ok", rolled
    host.home = tmp_path / "fresh-client"  # the escrowed passphrase opens it again
    assert host.archives() == ["lab6-a1", "lab6-a2"]


def test_offsite_snapshot_is_the_repository_as_verified_whatever_the_host_adds(server, tmp_path):
    """What the repository server copies offsite: the repository cut at the transaction the
    central run verified (hard links; its index kept while it is current); a backup or a logged
    delete the host commits afterwards is not in it, and the repository itself is untouched."""
    host = server.add_host("lab4")
    for n in range(2):
        host.backup(f"lab4-{n}")
    repo = server.repository(host, {"keep_last": 5})
    done = maintain.maintain(repo, None, _record(host))
    assert done["result"] == "ok", done
    verified = done["transaction"]
    dest = server.work / "offsite-lab4"

    def snapshot() -> None:
        repo_files.handle(
            {"op": "snapshot", "repository": str(host.repo), "transaction": verified,
             "dest": str(dest)}
        )  # fmt: skip

    snapshot()
    assert repo_files.index_transaction(str(dest)) == verified
    host.backup("lab4-late")  # committed after the verify
    host.borg("delete", f"{host.url}::lab4-0")  # and a delete, only logged (append-only)
    before = {p: p.stat().st_ino for p in host.repo.rglob("*") if p.is_file()}
    snapshot()  # the stale snapshot is replaced
    assert {p: p.stat().st_ino for p in host.repo.rglob("*") if p.is_file()} == before
    assert max(repo_files.segments(str(dest))) == verified
    shared = {p.stat().st_ino for p in dest.rglob("*") if p.is_file()} & set(before.values())
    assert shared, "the snapshot is hard links, not a copy"
    access = repo.access.at(server.url(dest), tmp_path / "snapshot-borg")
    assert sorted(borg.archives(access)) == ["lab4-0", "lab4-1"]
    with pytest.raises(repo_files.RepoFilesError, match="no segment"):
        repo_files.snapshot(str(host.repo), 999999, str(dest))
