"""The agent against real borg: round trip, interruption, locks, secrecy, drill, restore guards.

Over 400 lines on purpose: one case per behaviour, all on the one `host` fixture (an agent with
its own repository); split by topic, each file would only repeat it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from agent_support import AgentHost, make_tree, tree_sha256
from wait_support import wait_for

pytestmark = pytest.mark.borg


@pytest.fixture
def host(tmp_path, agent_pyz) -> AgentHost:
    h = AgentHost(tmp_path, agent_pyz)
    make_tree(h.src)
    h.init()
    return h


def _children(pid: int) -> list[int]:
    """Children of every thread of pid (the daemon's worker thread starts borg)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _wait_for_borg(agent: subprocess.Popen, subcommand: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _children(agent.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(cmd) > 1 and any(subcommand.encode() == c for c in cmd[1:3]):
                return pid
        if agent.poll() is not None:
            raise AssertionError(f"agent ended before borg {subcommand}: {agent.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"borg {subcommand} never started")


def test_backup_list_restore_round_trip_is_byte_identical(host, tmp_path):
    rc, result = host.json("backup")
    assert rc == 0, result
    assert result["status"] == "ok" and result["rc"] == 0
    assert result["archive"].startswith("testhost-") and result["archive"].endswith("Z")
    assert result["stats"]["nfiles"] == 24  # 25 files in the tree, scratch.tmp excluded
    assert result["stats"]["original_size"] > 300_000
    assert result["reported"] is False  # no API configured: it waits in the spool
    assert len(os.listdir(host.root / "spool")) == 1

    rc, listing = host.json("list")
    assert rc == 0 and [a["name"] for a in listing["archives"]] == [result["archive"]]
    assert host.archives() == [result["archive"]]

    target = tmp_path / "restored"
    rc, restored = host.json("restore", result["archive"], "--target", str(target))
    assert rc == 0, restored
    expected = {k: v for k, v in tree_sha256(host.src).items() if not k.endswith(".tmp")}
    assert tree_sha256(target / str(host.src).lstrip("/")) == expected

    # a single path restores only that path
    one = tmp_path / "one"
    rc, _ = host.json("restore", result["archive"], str(host.src / "etc"), "--target", str(one))
    assert rc == 0
    got = tree_sha256(one / str(host.src).lstrip("/"))
    assert set(got) == {"etc", "etc/app", "etc/app/app.conf"}

    # a path the archive does not hold is an error naming it, not a quiet success
    for paths in (["/no/such/path"], [str(host.src / "etc"), "/no/such/path"]):
        proc = host.run("restore", result["archive"], *paths, "--target", str(tmp_path / "x"))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"not in archive {result['archive']}: /no/such/path" in proc.stderr
        assert str(host.src) not in proc.stderr.split(":")[-1]
        shutil.rmtree(tmp_path / "x", ignore_errors=True)

    rc, info = host.json("info")
    assert rc == 0 and info["info"]["encryption"]["mode"] == "repokey-blake2"
    status = host.run("status", "--json")
    data = json.loads(status.stdout)
    assert data["last_archive"] == result["archive"] and data["spool_depth"] == 1
    assert data["borg_version"].startswith("1.")


def test_restore_never_lands_on_the_source(host, tmp_path):
    rc, result = host.json("backup")
    assert rc == 0
    before = tree_sha256(host.src)
    cases = [
        ("--target", "/"),
        ("--target", str(host.src / "data")),
        ("--target", str(host.src)),
    ]
    for args in cases:
        proc = host.run("restore", result["archive"], *args)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("mine")
    proc = host.run("restore", result["archive"], "--target", str(busy))
    assert proc.returncode == 2 and "not an empty directory" in proc.stderr
    assert (busy / "keep").read_text() == "mine"
    proc = host.run("restore", result["archive"])
    assert proc.returncode == 2 and "--target" in proc.stderr
    assert tree_sha256(host.src) == before


def test_in_place_restore_brings_back_deleted_files(host):
    rc, result = host.json("backup")
    assert rc == 0
    victim = host.src / "etc" / "app" / "app.conf"
    victim.unlink()
    rc, _ = host.json("restore", result["archive"], str(victim), "--in-place")
    assert rc == 0
    assert victim.read_text() == "key = value\n"
    # in place too, a path the archive does not hold is an error naming it
    absent = str(host.src / "never-backed-up")
    proc = host.run("restore", result["archive"], absent, "--in-place")
    assert proc.returncode == 2 and f"not in archive {result['archive']}: {absent}" in proc.stderr


def test_kill_9_during_create_then_backup_succeeds_and_keeps_earlier_archives(host, tmp_path):
    rc, first = host.json("backup")
    assert rc == 0
    first_tree = tree_sha256(host.src)
    big = host.src / "big"
    big.mkdir()
    for i in range(8):  # 160 MB of incompressible data, so create runs for seconds
        (big / f"r{i}.bin").write_bytes(os.urandom(20 * 1024 * 1024))

    agent = host.popen("backup", "--json")
    borg_pid = _wait_for_borg(agent, "create")
    deadline = time.monotonic() + 20
    while not (host.repo / "lock.exclusive").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # well into chunking/uploading
    os.kill(borg_pid, signal.SIGKILL)
    out, err = agent.communicate(timeout=60)
    killed = json.loads(out)
    assert agent.returncode == 2, err
    assert killed["status"] == "error" and killed["rc"] == -9 and killed["archive"] == ""
    assert (host.repo / "lock.exclusive").exists()  # the dead borg left its lock

    rc, again = host.json("backup", timeout=300)
    assert rc in (0, 1), again
    assert again["archive"] and again["stats"]["nfiles"] == first["stats"]["nfiles"] + 8
    assert any("broke stale lock" in w for w in again["warnings"])
    names = host.archives()
    assert first["archive"] in names and again["archive"] in names
    check = host.borg("check", str(host.repo))
    assert check.returncode == 0, check.stderr
    target = tmp_path / "first"
    rc, _ = host.json("restore", first["archive"], "--target", str(target))
    assert rc == 0
    restored = tree_sha256(target / str(host.src).lstrip("/"))
    assert restored == {k: v for k, v in first_tree.items() if not k.endswith(".tmp")}


def _hold_lock(host: AgentHost) -> subprocess.Popen:
    holder = subprocess.Popen(
        ["borg", "with-lock", str(host.repo), "sleep", "120"],
        env=host.env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not (host.repo / "lock.exclusive").exists():
        assert time.monotonic() < deadline and holder.poll() is None, "with-lock did not lock"
        time.sleep(0.02)
    return holder


def test_live_lock_is_reported_not_broken_and_stale_lock_is_broken(host):
    host.write_config(lock_wait_s=1)
    holder = _hold_lock(host)
    try:
        rc, result = host.json("backup")
        assert rc == 2
        assert result["status"] == "error" and result["archive"] == ""
        assert "locked" in result["message"] and f"pid {holder.pid} (alive)" in result["message"]
        # the report says why, so the API shows `locked`, not `failing`
        spooled = [json.loads(f.read_text()) for f in sorted((host.root / "spool").glob("*.json"))]
        assert spooled[-1]["body"]["exit_status"] == "error"
        assert spooled[-1]["body"]["locked"] is True
        assert holder.poll() is None  # the live holder was left alone
        assert any(n.endswith(f".{holder.pid}-0") for n in os.listdir(host.repo / "lock.exclusive"))
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # dies without releasing: a stale lock
        holder.wait()
    assert (host.repo / "lock.exclusive").exists()
    rc, result = host.json("backup")
    assert rc == 0, result
    assert any(f"pid {holder.pid} (dead)" in w for w in result["warnings"])
    assert result["archive"] in host.archives()


def test_passphrase_never_in_cmdline_env_or_logs_while_backup_runs(host):
    (host.src / "bulk").mkdir()
    for i in range(4):
        (host.src / "bulk" / f"{i}.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    secret = host.passphrase.encode()
    agent = subprocess.Popen(
        host.argv("-vv", "backup", "--json"),
        env=host.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    borg_pid = _wait_for_borg(agent, "create")
    scanned = 0
    borg_environ = b""
    while agent.poll() is None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            scanned += 1
            assert secret not in cmdline, f"passphrase in cmdline of pid {entry}"
        for pid in (agent.pid, borg_pid):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            assert secret not in environ
            if pid == borg_pid:
                borg_environ = environ
        time.sleep(0.01)
    out, err = agent.communicate()
    assert agent.returncode == 0, err
    assert scanned > 100
    assert b"BORG_PASSPHRASE_FD=" in borg_environ and b"BORG_PASSPHRASE=" not in borg_environ
    log_text = host.log_file.read_bytes()
    assert b"running borg create" in log_text  # -vv logs really were written
    for blob in (out, err, log_text):
        assert secret not in blob
    for name in os.listdir(host.root / "spool"):
        assert secret not in (host.root / "spool" / name).read_bytes()


def test_drill_passes_on_clean_data_and_detects_a_tampered_file(host):
    rc, result = host.json("backup")
    assert rc == 0
    before = tree_sha256(host.src)
    rc, drill = host.json("drill", "--percent", "100")
    assert rc == 0, drill
    assert drill["result"] == "pass" and drill["files_mismatched"] == 0
    assert drill["files_checked"] == drill["files_matched"] == 24  # regular files; symlink skipped
    assert tree_sha256(host.src) == before  # never touches the source

    # same size, same mtime, different bytes: only a content comparison can see it
    victim = host.src / "data" / "small-05.txt"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x01
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    rc, drill = host.json("drill", "--percent", "100")
    assert rc == 2
    assert drill["result"] == "fail" and drill["files_mismatched"] == 1
    assert drill["mismatched"] == [str(victim)]

    # a changed mtime means "changed since the archive": the file is not sampled
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rc, drill = host.json("drill", "--count", "5")
    assert rc == 0 and drill["files_checked"] == 5 and drill["files_eligible"] == 23


def test_check_reports_ok_and_detects_a_corrupted_segment(host):
    rc, _ = host.json("backup")
    assert rc == 0
    rc, check = host.json("check")
    assert rc == 0 and check["status"] == "ok" and check["verify_data"] is False
    # The report (spooled: no API) names the repository by the glossary's word alone.
    spooled = [json.loads(p.read_text()) for p in (host.root / "spool").glob("*.json")]
    body = next(r["body"] for r in spooled if r["kind"] == "check")
    assert body["repository"] == {"url": str(host.repo)} and "repo" not in body
    segments = sorted((host.repo / "data").rglob("[0-9]*"), key=lambda p: p.stat().st_size)
    biggest = segments[-1]
    blob = bytearray(biggest.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    biggest.write_bytes(bytes(blob))
    rc, check = host.json("check", "--verify-data")
    assert rc == 2 and check["status"] == "error"


def _wait(predicate, timeout: float = 60, what: str = "condition") -> None:
    wait_for(predicate, timeout, what)


def test_daemon_backs_up_when_due_keeps_a_pidfile_and_stops_on_sigterm(host):
    pidfile = host.root / "run" / "agent.pid"
    daemon = host.popen("daemon", "--pidfile", str(pidfile))
    try:
        _wait(lambda: pidfile.exists(), what="pidfile")
        assert int(pidfile.read_text()) == daemon.pid
        state = host.root / "state" / "state.json"
        _wait(lambda: state.exists() and "last_backup_at" in state.read_text(), what="backup")
        # a second daemon on the same pidfile refuses to start
        second = host.run("daemon", "--pidfile", str(pidfile), timeout=30)
        assert second.returncode == 2 and f"pid {daemon.pid}" in second.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert not pidfile.exists()
    assert len(host.archives()) == 1  # not due again within backup_interval_s


def test_sigterm_during_create_stops_borg_cleanly(host):
    (host.src / "bulk").mkdir()
    for i in range(6):
        (host.src / "bulk" / f"{i}.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    daemon = host.popen("daemon")
    try:
        borg_pid = _wait_for_borg(daemon, "create")
        _wait(lambda: (host.repo / "lock.exclusive").exists(), what="borg lock")
        time.sleep(0.3)
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0
    assert not Path(f"/proc/{borg_pid}").exists()
    assert not (host.repo / "lock.exclusive").exists()  # borg released its lock
    assert [n for n in host.archives() if not n.endswith(".checkpoint")] == []
    spooled = [json.loads(p.read_text()) for p in (host.root / "spool").glob("*.json")]
    assert [r["body"]["exit_status"] for r in spooled] == ["error"]
    assert "interrupted" in spooled[0]["body"]["message"]


def test_passcommand_mode_backs_up_without_a_passphrase_file(tmp_path, agent_pyz):
    h = AgentHost(tmp_path, agent_pyz)
    h.write_config(passphrase_file=None, passcommand=f"cat {h.passphrase_file}")
    make_tree(h.src)
    h.init()
    rc, result = h.json("backup")
    assert rc == 0, result
    assert h.archives() == [result["archive"]]
    assert h.passphrase.encode() not in h.log_file.read_bytes()
    key = tmp_path / "escrow" / "key.export"
    key.parent.mkdir()
    rc, out = h.json("key-export", "--out", str(key))
    assert rc == 0 and out["path"] == str(key)
    assert key.read_text().startswith("BORG_KEY ")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    rc, again = h.json("init")  # idempotent: an existing repo is never re-created
    assert rc == 0 and again["created"] is False


def _gated_borg(host: AgentHost, subcommand: str = "create") -> tuple[Path, Path]:
    """A borg_binary that holds `borg <subcommand>` at a gate until the test opens it, then
    execs the real borg: the action that reaches it keeps running (and holds the agent's flock)
    for as long as the test wants. Returns (gate, waiting-marker)."""
    gate, waiting = host.root / "gate", host.root / "at-gate"
    script = host.root / "gated-borg"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = {subcommand} ] && [ ! -e {gate} ]; then\n'
        f"  touch {waiting}\n"
        f"  while [ ! -e {gate} ]; do sleep 0.05; done\n"
        "fi\n"
        'exec borg "$@"\n'
    )
    script.chmod(0o755)
    host.write_config(borg_binary=str(script))
    return gate, waiting


def test_manual_backup_waits_for_the_daemons_scheduled_backup_then_runs(host):
    """R6 once failed: an operator's backup gave up after lock_wait_s (30 s) because the
    daemon's scheduled backup held the host's agent lock. It must wait for it, then back up."""
    host.write_config(lock_wait_s=1)  # the old limit of the wait, made short
    gate, waiting = _gated_borg(host)
    daemon = host.popen("daemon")
    try:
        _wait(waiting.exists, what="the daemon's scheduled backup at borg create")
        manual = host.popen("backup", "--json")
        time.sleep(3)  # well past lock_wait_s
        assert manual.poll() is None, manual.communicate()
        gate.touch()
        out, err = manual.communicate(timeout=120)
    finally:
        gate.touch()
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
    assert manual.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "ok" and result["waited_s"] >= 3
    assert result["waited_for"]["pid"] == daemon.pid
    assert result["waited_for"]["trigger"] == "daemon schedule"
    assert "waiting up to 3600 s" in err  # said once, on stderr, while it waited
    archives = host.archives()
    assert len(archives) == 2 and archives[-1] == result["archive"]  # the daemon's, then ours


def test_backup_that_cannot_wait_long_enough_reports_busy_naming_the_running_one(host):
    gate, waiting = _gated_borg(host)
    first = host.popen("backup", "--json")
    try:
        _wait(waiting.exists, what="the first backup at borg create")
        busy = host.run("backup", "--json", "--wait", "1")
    finally:
        gate.touch()
        first_out, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert busy.returncode == 75, busy.stderr
    result = json.loads(busy.stdout)
    assert result["status"] == "error" and result["result"] == "busy"
    assert result["holder"]["pid"] == first.pid
    assert result["holder"]["trigger"] == "command line"
    assert f"pid {first.pid}, started at " in result["message"]
    assert "saveos-agent: busy: " in busy.stderr
    assert host.archives() == [json.loads(first_out)["archive"]]  # nothing else was done


def test_daemon_does_not_stall_behind_a_manual_check_and_stops_on_sigterm(host):
    """The daemon's scheduled backup does not wait busy_wait_s behind an action started by hand
    (that would stall its heartbeats): it skips, looks again on its next loop, and SIGTERM
    stops it at once."""
    gate, waiting = _gated_borg(host, "check")
    manual = host.popen("check", "--json")
    daemon = None
    try:
        _wait(waiting.exists, what="the manual check at borg check")
        daemon = host.popen("daemon")
        _wait(
            lambda: "scheduled backup not started" in host.log_file.read_text(),
            what="the daemon to skip its scheduled backup",
        )
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=15)  # not stuck behind busy_wait_s (3600 s)
        assert daemon.returncode == 0
    finally:
        gate.touch()
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        manual.communicate(timeout=120)
    assert manual.returncode == 0
    assert "(command line), pid" in host.log_file.read_text()
    assert host.archives() == []
