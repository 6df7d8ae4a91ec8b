"""Agent units: argv builders, exit-code classification, config validation, spool, masking.

Over 400 lines on purpose: the agent's fast cases in one place, in sections (argv builders,
locks, spool, config, artifact, ...), each a few short cases.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from agent_support import SYSTEM_PYTHON, write_private
from saveos_agent import borg_commands as bc
from saveos_agent import config as config_mod
from saveos_agent import execute, locks, logsetup
from saveos_agent.errors import AgentError
from saveos_agent.spool import Spool

# ---- argv builders ---------------------------------------------------------------------------


def test_create_argv_carries_json_checkpoints_compression_excludes_and_lock_wait():
    argv = bc.create(
        "/r",
        "h-2026",
        ["/etc", "/srv"],
        excludes=["*.tmp", "/srv/cache"],
        compression="zstd,3",
        checkpoint_interval=300,
        lock_wait=30,
    )
    assert argv == (
        "borg", "create", "--log-json", "--lock-wait", "30", "--json",
        "--compression", "zstd,3", "--checkpoint-interval", "300",
        "--exclude", "*.tmp", "--exclude", "/srv/cache",
        "/r::h-2026", "/etc", "/srv",
    )  # fmt: skip
    assert isinstance(argv, tuple)


def test_prune_maps_retention_and_limits_to_this_hosts_archives():
    argv = bc.prune(
        "ssh://u@h/r",
        {"keep_within": "1d", "keep_daily": 7, "keep_weekly": 0, "keep_monthly": 6},
        glob_archives="web1-*",
        lock_wait=5,
    )
    assert argv == (
        "borg", "prune", "--log-json", "--lock-wait", "5", "--list", "--stats",
        "--keep-within", "1d", "--keep-daily", "7", "--keep-monthly", "6",
        "--glob-archives", "web1-*", "ssh://u@h/r",
    )  # fmt: skip


def test_other_builders():
    assert bc.compact("/r", lock_wait=1) == (
        "borg",
        "compact",
        "--log-json",
        "--lock-wait",
        "1",
        "/r",
    )
    assert bc.check("/r", verify_data=True)[-2:] == ("--verify-data", "/r")
    assert "--verify-data" not in bc.check("/r")
    assert bc.list_archives("/r") == ("borg", "list", "--log-json", "--json", "/r")
    assert bc.list_items("/r", "a") == ("borg", "list", "--log-json", "--json-lines", "/r::a")
    assert bc.list_items("/r", "a", paths=["-x"])[-3:] == ("/r::a", "--", "-x")
    assert bc.info("/r", "a")[-2:] == ("--json", "/r::a")
    assert bc.info("/r")[-1] == "/r"
    # Paths after "--": one starting with "-" is never read as an option.
    assert bc.extract("/r", "a", ["/etc/x", "srv/y"])[-4:] == ("/r::a", "--", "etc/x", "srv/y")
    assert bc.extract("/r", "a", ["-x"])[-2:] == ("--", "-x")
    assert bc.init("/r") == ("borg", "init", "--log-json", "--encryption", "repokey-blake2", "/r")
    assert bc.key_export("/r", "/k") == ("borg", "key", "export", "--log-json", "/r", "/k")
    assert bc.break_lock("/r") == ("borg", "break-lock", "--log-json", "/r")
    assert bc.create("/r", "a", ["/x"], borg="/opt/borg")[0] == "/opt/borg"


@pytest.mark.parametrize(
    "rc,expected",
    [
        (0, "ok"),
        (1, "warning"),
        (2, "error"),
        (3, "error"),  # modern: generic errors
        (73, "error"),  # modern: LockTimeout
        (99, "error"),
        (100, "warning"),  # modern: FileChangedWarning
        (107, "warning"),
        (127, "warning"),
        (130, "error"),  # 128 + SIGINT
        (-9, "error"),  # killed
    ],
)
def test_exit_code_classification(rc, expected):
    assert execute.classify(rc) == expected


def test_borg_env_never_carries_an_inherited_passphrase_and_uses_modern_codes():
    base = {"BORG_PASSPHRASE": "leak", "PATH": "/usr/bin", "BORG_PASSCOMMAND": "cat /x"}
    env = execute.build_env(execute.Secrets(passphrase_file="/p"), base, passphrase_fd=7)
    assert env["BORG_PASSPHRASE_FD"] == "7"
    assert env["BORG_EXIT_CODES"] == "modern"
    assert "BORG_PASSPHRASE" not in env and "BORG_PASSCOMMAND" not in env
    env = execute.build_env(execute.Secrets(passcommand="cat /etc/saveos/pp"), base)
    assert env["BORG_PASSCOMMAND"] == "cat /etc/saveos/pp" and "BORG_PASSPHRASE" not in env


def test_log_json_lines_are_parsed_and_lock_timeouts_detected():
    logs: list = []
    line = json.dumps(
        {
            "type": "log_message",
            "levelname": "ERROR",
            "message": "Failed to create/acquire the lock /r/lock.exclusive (timeout).",
            "msgid": "LockTimeout",
        }
    )
    execute._handle_stderr_line(line + "\n", logs)
    execute._handle_stderr_line('{"type": "progress_percent", "finished": false}\n', logs)
    execute._handle_stderr_line("ssh: connect to host h port 22: refused\n", logs)
    assert [e["levelname"] for e in logs] == ["ERROR", "WARNING"]
    result = execute.BorgResult(
        argv=("borg", "create"), rc=2, status="error", stdout="", duration_s=0, logs=logs
    )
    assert "ssh" in result.messages[1]
    assert result.error_message.startswith("Failed to create/acquire the lock")


def test_mask_filter_hides_secrets_in_every_handler(tmp_path):
    log_file = tmp_path / "agent.log"
    logsetup.setup(2, str(log_file))
    logsetup.add_secret("s3cr3t-passphrase")
    logger = logging.getLogger("saveos_agent.test")
    logger.error("value=%s", "s3cr3t-passphrase")
    try:
        raise ValueError("boom s3cr3t-passphrase")
    except ValueError:
        logger.exception("failed")
    text = log_file.read_text()
    assert "s3cr3t-passphrase" not in text
    assert text.count(logsetup.MASK) >= 2
    assert stat.S_IMODE(os.stat(log_file).st_mode) == 0o600


# ---- locks -----------------------------------------------------------------------------------


def test_lock_inspection_tells_dead_pid_of_this_host_from_live_and_foreign(tmp_path):
    import socket
    import uuid

    host = f"{socket.gethostname()}@{uuid.getnode()}"
    dead = subprocess.Popen(["true"])
    dead.wait()
    repo = tmp_path / "repo"
    (repo / "lock.exclusive").mkdir(parents=True)
    (repo / "lock.exclusive" / f"{host}.{dead.pid}-0").touch()
    (repo / "lock.roster").write_text(json.dumps({"exclusive": [[host, dead.pid, 0]]}))
    assert locks.state(str(repo)) == "stale"
    (repo / "lock.exclusive" / f"{host}.{os.getpid()}-0").touch()
    assert locks.state(str(repo)) == "live"
    os.unlink(repo / "lock.exclusive" / f"{host}.{os.getpid()}-0")
    (repo / "lock.exclusive" / f"otherhost@123.{dead.pid}-0").touch()
    assert locks.state(str(repo)) == "live"  # another host's pid cannot be checked
    assert locks.state(str(tmp_path)) == "free"


# ---- spool -----------------------------------------------------------------------------------


def test_spool_writes_private_files_atomically_oldest_first(tmp_path):
    spool = Spool(str(tmp_path / "spool"), max_reports=100)
    first = spool.add("/api/v1/reports/snapshots", {"archive": "a"}, "snapshot")
    second = spool.add("/api/v1/reports/snapshots", {"archive": "b"}, "snapshot")
    assert spool.pending() == [first, second]
    assert not [n for n in os.listdir(tmp_path / "spool") if n.endswith(".tmp")]
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700
    record = json.loads(Path(first).read_text())
    assert record["body"]["archive"] == "a" and 8 <= len(record["body"]["report_id"]) <= 64
    outcome = spool.flush(None)
    assert outcome["remaining"] == 2  # without an API nothing is dropped


def test_spool_bound_warns_near_the_limit_and_keeps_the_newest(tmp_path, caplog):
    spool = Spool(str(tmp_path / "spool"), max_reports=5)
    logsetup.setup(0)
    logging.getLogger("saveos_agent").propagate = True
    with caplog.at_level(logging.WARNING, logger="saveos_agent"):
        ids = [spool.add("/x", {"n": i}) for i in range(7)]
    assert spool.depth() == 5
    assert spool.pending() == ids[2:]
    assert any("at most 5 reports" in r.getMessage() for r in caplog.records)
    assert any("spool full" in r.getMessage() for r in caplog.records)
    logging.getLogger("saveos_agent").propagate = False


# ---- config ----------------------------------------------------------------------------------


def _valid(tmp_path) -> dict:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    pp = write_private(tmp_path / "pp", "x" * 20)
    return {
        "repository": str(tmp_path / "repo"),
        "passphrase_file": str(pp),
        "sources": [str(src)],
        "retention": {"keep_daily": 7},
    }


def test_valid_config_gets_defaults(tmp_path):
    path = write_private(tmp_path / "agent.json", json.dumps(_valid(tmp_path)))
    cfg = config_mod.load(str(path))
    assert cfg.lock_wait_s == 30 and cfg.compression == "zstd,3"
    assert cfg.backup_interval_s == 86400 and cfg.retention == {"keep_daily": 7}
    assert cfg.local_repository == str(tmp_path / "repo")


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c.pop("repository"), "missing required config key 'repository'"),
        (lambda c: c.update(colour="red"), "unknown config key 'colour'"),
        (
            lambda c: c.update(retention={"keep_daily": -1}),
            "'retention.keep_daily' must be an integer >= 0",
        ),
        (
            lambda c: c.update(retention={"keep_daily": "7"}),
            "'retention.keep_daily' must be an integer",
        ),
        (lambda c: c.update(retention={"keep_within": "7 days"}), "'retention.keep_within'"),
        (lambda c: c.update(retention={"keep_daily": 0}), "'retention' keeps nothing"),
        (
            lambda c: c.update(retention={"keep_dayly": 3}),
            "config key 'retention.keep_dayly' is not a retention key",
        ),
        (lambda c: c.update(sources="/etc"), "'sources' must be a list"),
        (lambda c: c.update(sources=["/definitely/not/here"]), "'sources[0]'"),
        (lambda c: c.update(lock_wait_s=True), "'lock_wait_s' must be an integer"),
        (lambda c: c.update(schedule={"backup_interval_s": 0}), "'schedule.backup_interval_s'"),
        (
            lambda c: c.update(schedule={"heartbeat_interval_s": 1}),
            "'schedule.heartbeat_interval_s' must be between 5 and",
        ),
        (
            lambda c: c.update(schedule={"backup_interval_s": 600, "heartbeat_interval_s": 600}),
            "'schedule.heartbeat_interval_s' (600) must be shorter than backup_interval_s",
        ),
        (lambda c: c.update(hostname="-bad"), "'hostname' is not a valid host name"),
        (lambda c: c.update(passcommand="cat /x"), "exclusive"),
        (lambda c: c.pop("passphrase_file"), "'passphrase_file'"),
        (lambda c: c.update(api_url="http://127.0.0.1:1"), "'token_file'"),
        (lambda c: c.update(compression="gzip"), "'compression'"),
    ],
)
def test_bad_config_names_the_key(tmp_path, mutate, needle):
    data = _valid(tmp_path)
    mutate(data)
    with pytest.raises(AgentError) as err:
        config_mod.validate(data, str(tmp_path / "agent.json"))
    assert needle in err.value.message
    assert err.value.exit_code == 2


def _cli(pyz, config_path, *args):
    return subprocess.run(
        [SYSTEM_PYTHON, str(pyz), "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "case",
    ["config_mode", "passphrase_mode", "missing_key", "bad_retention", "unknown_key", "bad_json"],
)
def test_bad_config_via_real_cli_exits_2_with_one_line(tmp_path, agent_pyz, case):
    data = _valid(tmp_path)
    mode = 0o600
    text = None
    if case == "config_mode":
        mode, needle = 0o644, "accessible by group/others (mode 0644)"
    elif case == "passphrase_mode":
        os.chmod(data["passphrase_file"], 0o640)
        needle = "passphrase_file"
    elif case == "missing_key":
        data.pop("sources")
        needle = "missing required config key 'sources'"
    elif case == "bad_retention":
        data["retention"] = {"keep_weekly": -2}
        needle = "retention.keep_weekly"
    elif case == "unknown_key":
        data["repositry"] = "/x"
        needle = "unknown config key 'repositry'"
    else:
        text, needle = "{not json", "not valid JSON"
    path = tmp_path / "agent.json"
    path.write_text(text if text is not None else json.dumps(data))
    os.chmod(path, mode)
    proc = _cli(agent_pyz, path, "status")
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = _cli(agent_pyz, path, "backup", "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["status"] == "error"


def test_usage_errors_exit_2(tmp_path, agent_pyz):
    proc = _cli(agent_pyz, tmp_path / "none.json", "frobnicate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = _cli(agent_pyz, tmp_path / "none.json", "status")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# ---- artifact --------------------------------------------------------------------------------


def test_zipapp_is_deterministic_and_runs_under_system_python(tmp_path, agent_pyz):
    from saveos_agent import __version__

    rebuilt = tmp_path / "again.pyz"
    subprocess.run(
        [SYSTEM_PYTHON, "agent/build.py", "--out", str(rebuilt)], check=True, capture_output=True
    )
    assert rebuilt.read_bytes() == agent_pyz.read_bytes()
    assert agent_pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(agent_pyz), "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"saveos-agent {__version__}"
    proc = subprocess.run([str(agent_pyz), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0


def test_an_unchanged_rebuild_still_counts_as_newer_than_its_sources(tmp_path):
    """A checkout or merge moves a source's mtime without changing its bytes: the rebuild writes
    nothing new, yet the artifact must no longer look older than its sources (the deploy took
    such an artifact for unbuilt and installed no zipapp)."""
    out = tmp_path / "saveos-agent.pyz"
    build = [SYSTEM_PYTHON, "agent/build.py", "--out", str(out)]
    subprocess.run(build, check=True, capture_output=True)
    newest_source = max(p.stat().st_mtime for p in Path("agent").rglob("*.py"))
    os.utime(out, (newest_source - 60, newest_source - 60))  # as if a source moved since
    subprocess.run(build, check=True, capture_output=True)
    assert out.stat().st_mtime >= newest_source


def test_zipapp_carries_bytecode_and_falls_back_to_source_for_other_pythons(tmp_path, agent_pyz):
    """The .pyc entries spare each start the compile of every module; an interpreter whose
    bytecode magic differs must ignore them and still run from the .py sources."""
    import zipfile

    probe = "import sys, saveos_agent.actions.backup as a; print(a.__file__)"

    def loaded_from(pyz: Path) -> str:
        env = dict(os.environ, PYTHONPATH=str(pyz))
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, env=env, check=True
        )
        return proc.stdout.strip()

    assert loaded_from(agent_pyz).endswith("saveos_agent/actions/backup.pyc")
    foreign = tmp_path / "foreign.pyz"
    with zipfile.ZipFile(agent_pyz) as src, zipfile.ZipFile(foreign, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".pyc"):
                data = b"\x00\x00\r\n" + data[4:]  # another Python's magic number
            dst.writestr(info, data)
    assert loaded_from(foreign).endswith("saveos_agent/actions/backup.py")
    proc = subprocess.run([SYSTEM_PYTHON, str(foreign), "--version"], capture_output=True)
    assert proc.returncode == 0


def test_report_ids_are_random_uuid4_hex():
    import uuid

    from saveos_agent.spool import new_report_id

    ids = {new_report_id() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_backup_without_an_api_never_imports_the_http_stack(tmp_path, agent_pyz):
    """urllib.request drags in http.client and ssl: more CPU than the rest of the agent's
    start-up, paid by every backup run from the timer even when no API is configured."""
    from agent_support import AgentHost

    host = AgentHost(tmp_path, agent_pyz)
    host.init()
    (host.src / "file").write_text("data\n")
    probe = (
        "import sys, runpy; sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    loaded = sorted(m for m in ('ssl', 'http.client', 'urllib.request', 'uuid')"
        " if m in sys.modules)\n"
        "    print('LOADED', loaded, file=sys.stderr); raise\n"
    )
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", probe, *host.argv("backup", "--json")[1:]],
        env=host.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["archive"].startswith("testhost-")
    assert "LOADED []" in proc.stderr


def test_user_mode_config_path_follows_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert config_mod.user_config_path() == str(tmp_path / ".config" / "saveos" / "config.json")


def test_second_agent_action_waits_then_reports_busy_while_one_runs(tmp_path, agent_pyz):
    import fcntl

    from agent_support import AgentHost

    host = AgentHost(tmp_path, agent_pyz, lock_wait_s=1, busy_wait_s=1)
    (tmp_path / "state").mkdir(mode=0o700)
    holder = {"pid": 4242, "action": "backup", "trigger": "daemon schedule", "started_at": "T0"}
    with open(tmp_path / "state" / "agent.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running backup holds
        held.write(json.dumps(holder))
        held.flush()
        started = time.monotonic()
        proc = host.run("backup")
        waited = time.monotonic() - started
        quick = host.run("check", "--wait", "0", "--json")
    assert proc.returncode == 75 and waited >= 1, proc.stderr
    assert "saveos-agent: busy: another saveos-agent action is running" in proc.stderr
    assert "daemon schedule), pid 4242, started at T0" in proc.stderr
    assert quick.returncode == 75
    out = json.loads(quick.stdout)
    assert out["status"] == "error" and out["result"] == "busy" and out["holder"] == holder
    assert not (tmp_path / "repo").exists()  # borg never started


def test_backup_slots_follow_the_offset_like_the_systemd_timer(tmp_path):
    """With schedule.backup_offset_s the daemon's first backup waits for the host's slot."""
    import datetime as dt

    from saveos_agent import daemon
    from saveos_agent.config import Config
    from saveos_agent.state import save_state

    day = 86400
    cfg = Config(path=str(tmp_path / "agent.json"), repository="/r", sources=["/s"])
    cfg.state_dir = str(tmp_path / "state")
    cfg.backup_interval_s, cfg.backup_offset_s = day, 3600 + 23 * 60  # 01:23 UTC
    midnight = dt.datetime(2026, 11, 25, tzinfo=dt.UTC).timestamp()
    assert daemon.next_slot(midnight + 10, day, cfg.backup_offset_s) == midnight + 4_980
    started = midnight + 14 * 3600  # deployed at 14:00: nothing until tomorrow 01:23
    assert not daemon.backup_due(cfg, started + 60, started)
    assert not daemon.backup_due(cfg, midnight + day + 4_979, started)
    assert daemon.backup_due(cfg, midnight + day + 4_980, started)
    # after a success at 01:24 the next one is the following day's slot
    done = dt.datetime.fromtimestamp(midnight + day + 5_040, dt.UTC).isoformat()
    save_state(cfg, last_backup_at=done)
    assert not daemon.backup_due(cfg, midnight + 2 * day + 4_979, started)
    assert daemon.backup_due(cfg, midnight + 2 * day + 4_980, started)
    # without an offset: due a whole interval after the last success, at once when never
    cfg.backup_offset_s = None
    assert not daemon.backup_due(cfg, midnight + 2 * day + 4_980, started)
    assert daemon.backup_due(cfg, midnight + 2 * day + 5_040, started)


def test_borg_version_is_cached_per_binary_and_refreshed_when_the_binary_changes(tmp_path):
    # A stand-in borg that counts its starts: what is under test is our cache, not borg.
    counter = tmp_path / "starts"
    borg = tmp_path / "bin" / "borg"
    borg.parent.mkdir()

    def install(version: str) -> None:
        borg.write_text(f"#!/bin/sh\necho x >> {counter}\necho borg {version}\n")
        borg.chmod(0o755)

    install("1.2.4")
    state = tmp_path / "state"
    state.mkdir()
    assert execute.borg_version(str(borg), str(state)) == "1.2.4"
    assert execute.borg_version(str(borg), str(state)) == "1.2.4"
    assert counter.read_text().count("x") == 1, "second call should come from the cache"

    install("1.4.10")  # an upgrade replaces the file: size and mtime change
    os.utime(borg, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert execute.borg_version(str(borg), str(state)) == "1.4.10"
    assert counter.read_text().count("x") == 2

    # Without a cache dir (status, tests) borg is asked every time.
    assert execute.borg_version(str(borg)) == "1.4.10"
    assert counter.read_text().count("x") == 3
    assert execute.borg_version(str(tmp_path / "missing-borg"), str(state)) is None


def test_flush_survives_a_report_another_flusher_took_and_flushers_take_turns(tmp_path):
    import socket
    import threading

    from saveos_agent.api_client import ApiClient

    spool = Spool(str(tmp_path / "spool"))
    gone = spool.add("/api/v1/reports/checks", {"x": 1})
    kept = spool.add("/api/v1/reports/checks", {"x": 2})
    token = write_private(tmp_path / "token", "agt_" + "a" * 40 + "\n")
    with socket.socket() as s:  # a loopback port nobody listens on: the API is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ApiClient(f"http://127.0.0.1:{port}", str(token), timeout=2)

    # What the daemon's flush looks like from a backup's flush: the listing still names a
    # report that the other process has sent (and unlinked) since.
    listed = spool.pending()
    os.unlink(gone)
    spool.pending = lambda: listed
    outcome = spool.flush(client)
    assert outcome["sent"] == 0 and outcome["rejected"] == 0, outcome
    assert outcome["error"] and os.path.exists(kept), "the live report stays for the next flush"
    assert spool.rejected() == 0, "a report sent by another flusher is not parked"

    # While one flusher holds the spool, a second one waits instead of sending the same reports.
    del spool.pending
    order = []
    with spool._flush_lock():
        other = threading.Thread(target=lambda: order.append(spool.flush(client)["error"]))
        other.start()
        other.join(0.5)
        assert other.is_alive(), "the second flusher should wait for the lock"
        order.append("first done")
    other.join(10)
    assert order[0] == "first done" and len(order) == 2
