"""R7 secrets: no passphrase, token or database password shows up in what ansible and the CLI
printed in any case (the fleet's first deploy ran at -vvv, plus a -vvv backup here), in the API
or agent logs, or in any process's argv (/proc/*/cmdline snapshots of the controller and every
lab host, taken during the deploy and the backup, lab2's MariaDB dump included). Secret files
are 0600 on hosts and in the controller's escrow; no file others can read holds the database
password."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from acceptance.conftest import DB_HOST, CmdlineWatcher

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]
PRIVATE_ON_HOST = ("/etc/saveos/agent.json", "/etc/saveos/token", "/etc/saveos/passphrase")


def leaks(sources: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{secret} in {where}"
        for where, text in sources.items()
        for secret, value in secrets.items()
        if value and value in text
    ]


def test_r7_no_secret_anywhere_and_files_private(fleet, figures):
    secrets = fleet.secrets()
    assert len(secrets) == 1 + 2 * len(fleet.hosts) + 1  # + lab2's database password
    assert all(len(v) >= 32 for v in secrets.values()), "a secret looks empty"
    # lab2's dump of 100 rows ends in a few ms, between two /proc snapshots: a table lock held
    # until the watcher has seen mariadb-dump waiting for it makes the dump impossible to miss
    locker = subprocess.Popen(
        ["mariadb", "--host=127.0.0.1", "--port=3306", "--protocol=TCP", "--user=root",
         fleet.db_name],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    locker.stdin.write("LOCK TABLES items WRITE; SELECT SLEEP(300);\n")
    locker.stdin.flush()
    pool = ThreadPoolExecutor(1)
    try:
        with CmdlineWatcher() as watcher:
            running = pool.submit(fleet.playbook, "backup.yml", "-vvv")
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not running.done():
                if any("mariadb-dump" in c for c in list(watcher.seen)):
                    break
                time.sleep(0.1)
            locker.kill()  # the lock goes with the connection: the dump goes on
            backup = running.result()
    finally:
        locker.kill()
        locker.wait()
        pool.shutdown()
    assert backup.returncode == 0, backup.stdout[-3000:]
    assert "ESTABLISH SSH CONNECTION" in fleet.outputs[0]  # the first deploy really was -vvv
    sources = {f"ansible/cli output {i}": text for i, text in enumerate(fleet.outputs)}
    sources["API log"] = fleet.api.server.log_path.read_text(errors="replace")
    for host in fleet.hosts:
        logs = fleet.sh(host, "find /var/log/saveos -type f -exec cat {} +")
        assert logs.returncode == 0 and logs.stdout, f"{host}: no agent log"
        sources[f"{host} agent logs"] = logs.stdout
    cmdlines = fleet.deploy_cmdlines | watcher.seen
    sources["/proc/*/cmdline"] = "\n".join(cmdlines)
    assert any("borg create" in c for c in watcher.seen), "the watcher missed the backup"
    assert any("mariadb-dump" in c for c in watcher.seen), "the watcher missed the dump"
    assert leaks(sources, secrets) == []

    bad_modes = []
    for host in fleet.hosts:
        out = fleet.sh(host, "stat -c '%n %a %U' /etc/saveos " + " ".join(PRIVATE_ON_HOST))
        modes = {}
        for line in out.stdout.splitlines():
            name, mode, user = line.rsplit(" ", 2)
            modes[name] = f"{mode} {user}"
        expected = {"/etc/saveos": "700 root", **dict.fromkeys(PRIVATE_ON_HOST, "600 root")}
        bad_modes += [f"{host}:{p} {modes.get(p)}" for p in expected if modes.get(p) != expected[p]]
        # ca.crt is the fleet's public CA certificate: world-readable on purpose.
        loose = fleet.sh(
            host,
            "find /etc/saveos /var/lib/saveos/spool -perm /077 -type f ! -path /etc/saveos/ca.crt",
        )
        bad_modes += [f"{host}:{p} group/world access" for p in loose.stdout.split()]
    # the database password: only in its 0600 credentials file, in no file others can read
    creds = fleet.sh(
        DB_HOST, "stat -c '%a %U' /etc/saveos/databases/*; cat /etc/saveos/databases/*"
    )
    assert creds.stdout.startswith("600 root\n[client]\npassword="), creds.stdout
    readable = fleet.sh(
        DB_HOST,
        "find /etc /var /opt /srv /root -xdev -type f -perm -o+r -size -2M "
        f"-exec grep -lF -- {fleet.db_password[3:35]} {{}} + 2>/dev/null",  # its 32 hex digits
    )
    bad_modes += [
        f"{DB_HOST}:{p} readable by others, holds the password" for p in readable.stdout.split()
    ]
    for path in fleet.escrow.rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        if path.stat().st_mode & 0o777 != want:
            bad_modes.append(f"escrow {path} {oct(path.stat().st_mode & 0o777)}")
    escrowed = sum(1 for p in fleet.escrow.rglob("*") if p.is_file())
    assert escrowed >= 2 * len(fleet.hosts)
    assert bad_modes == []
    figures.append(
        f"R7 secrets: {len(secrets)} secrets absent from {len(sources)} sources "
        f"({sum(map(len, sources.values())):,} chars of -vvv output and logs, "
        f"{len(cmdlines):,} distinct argv from /proc); {3 * len(fleet.hosts)} host files 0600, "
        f"{escrowed} escrow files 0600"
    )


def test_r7_negative_a_secret_in_a_host_argv_is_caught(fleet):
    """The /proc snapshots reach into the lab hosts: a passphrase in argv there is found."""
    secret = fleet.secrets()["lab2 passphrase"]
    with CmdlineWatcher() as watcher:
        fleet.sh("lab2", 'P=$(cat /etc/saveos/passphrase); sh -c "sleep 1; : $P"')
    assert leaks({"/proc": "\n".join(watcher.seen)}, {"lab2 passphrase": secret})
