"""The repository server's key helper (roles/saveos_repo_server/files/saveos-repo-keys), run as
the deploy runs it: `clients` registers a batch of new hosts under one lock, reports each, and
a refused entry costs only itself."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
from pathlib import Path

HELPER = Path(__file__).resolve().parent.parent / "roles/saveos_repo_server/files/saveos-repo-keys"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHu6vJ2ZzXJ5a7E0Q1qFq0y7m5kz2Q6c2u5m8Yb0aAaA"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0b1c2d3e4f5g6h7i8j9k0l1m2n3o4p5q6r7s8t9u0vBbBb"


def _helper(config: Path, *args: str, stdin: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, str(HELPER), "--config", str(config), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stderr == "", proc.stderr  # never a traceback
    return proc.returncode, json.loads(proc.stdout)


def test_clients_registers_a_batch_and_refuses_only_the_bad_entry(tmp_path):
    host_key = tmp_path / "ssh_host_ed25519_key.pub"
    host_key.write_text("ssh-ed25519 AAAAserverkey root@repo1\n")
    root = tmp_path / "repos"
    root.mkdir()
    config = tmp_path / "server.json"
    user = pwd.getpwuid(0).pw_name  # the directories' owner: this test runs as root
    layout = {"user": user, "home": str(tmp_path / "home"), "root": str(root)}
    config.write_text(json.dumps({**layout, "host_key_file": str(host_key)}))
    batch = [
        {"name": "web1", "key": KEY_A + " saveos-web1", "quota": "50G"},
        {"name": "web2", "key": KEY_B, "quota": ""},
        {"name": "bad", "key": "not a key", "quota": ""},
        {"name": "-x", "key": KEY_A, "quota": ""},
    ]
    rc, out = _helper(config, "clients", stdin=json.dumps(batch))
    assert rc == 0 and out["changed"] is True
    assert out["host_key"] == "ssh-ed25519 AAAAserverkey"
    assert out["clients"]["web1"] == {"changed": True, "repository": str(root / "web1")}
    assert out["clients"]["web2"]["changed"] is True
    assert (
        out["clients"]["bad"]["failed"]
        and "not an OpenSSH public key" in out["clients"]["bad"]["msg"]
    )
    assert out["clients"]["-x"]["failed"]
    keys = (tmp_path / "home" / ".ssh" / "authorized_keys").read_text().splitlines()
    web1 = (
        f'command="borg serve --append-only --restrict-to-repository {root / "web1"}'
        f' --storage-quota 50G",restrict {KEY_A} saveos-client:web1'
    )
    assert web1 in keys
    assert [k for k in keys if "bad" in k or "-x" in k] == []
    assert sorted(p.name for p in root.iterdir()) == ["web1", "web2"]
    assert (root / "web1").stat().st_mode & 0o777 == 0o700

    # Again: nothing to do, and each entry says so.
    rc, again = _helper(config, "clients", stdin=json.dumps(batch[:2]))
    assert rc == 0 and again["changed"] is False
    assert {n: c["changed"] for n, c in again["clients"].items()} == {"web1": False, "web2": False}

    # --check with a new quota: reported, not written.
    changed = [{**batch[0], "quota": "80G"}]
    rc, checked = _helper(config, "--check", "clients", stdin=json.dumps(changed))
    assert rc == 0 and checked["clients"]["web1"]["changed"] is True
    assert web1 in (tmp_path / "home" / ".ssh" / "authorized_keys").read_text().splitlines()

    for wrong in ("{not json", '{"name": "web1"}'):
        rc, refused = _helper(config, "clients", stdin=wrong)
        assert rc == 1 and refused["failed"] and "JSON" in refused["msg"]
