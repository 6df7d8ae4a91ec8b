"""Agent units of issue 17: what the heartbeat says runs, the on-disk job queue, scheduled
verification slots and the verify config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from saveos_agent import activity, jobqueue, verify_schedule
from saveos_agent import config as config_mod
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.state import save_state

REPO_ROOT = Path(__file__).resolve().parent.parent
DAY, WEEK = 86400, 7 * 86400


def cfg_at(tmp_path: Path) -> Config:
    return Config(
        path=str(tmp_path / "agent.json"),
        repository="/r",
        sources=["/s"],
        state_dir=str(tmp_path / "state"),
    )


def test_running_markers_name_the_work_while_it_runs(tmp_path):
    cfg = cfg_at(tmp_path)
    assert activity.current(cfg) == []
    with activity.running(cfg, "backup", 12), activity.running(cfg, "drill"):
        now = activity.current(cfg)
    assert [(m["kind"], m.get("job_id")) for m in now] == [("backup", 12), ("drill", None)]
    assert all(datetime.fromisoformat(m["started_at"].replace("Z", "+00:00")) for m in now)
    assert "pid" not in now[0]  # the API gets kind, job id and start only
    assert activity.current(cfg) == []


def test_a_marker_left_by_a_dead_process_is_dropped(tmp_path):
    cfg = cfg_at(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    marker = Path(cfg.state_dir, "running", f"{dead.pid}-1-backup.json")
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"kind": "backup", "started_at": "2026-12-01T10:02:00Z",
                                  "pid": dead.pid}))  # fmt: skip
    (marker.parent / "garbage.json").write_text("{")
    assert activity.current(cfg) == []
    assert not marker.exists()


def test_the_job_queue_runs_in_id_order_and_takes_jobs_queued_meanwhile(tmp_path):
    cfg = cfg_at(tmp_path)
    jobqueue.add(cfg, [{"id": 10, "kind": "backup"}, {"id": 9, "kind": "check"}])
    ran = []

    def run_job(_cfg, job):
        ran.append(job["id"])
        if job["id"] == 9:
            jobqueue.add(cfg, [{"id": 11, "kind": "drill"}])  # arrives while the runner runs
        return {"id": job["id"], "state": "succeeded"}

    done = jobqueue.run_pending(cfg, run_job)
    assert ran == [9, 10, 11] and [d["id"] for d in done] == ran
    assert jobqueue.pending(cfg) == []


def test_a_second_runner_leaves_the_queue_to_the_first(tmp_path):
    import fcntl

    cfg = cfg_at(tmp_path)
    jobqueue.add(cfg, [{"id": 1, "kind": "backup"}])
    os.makedirs(cfg.state_dir, exist_ok=True)
    fd = os.open(os.path.join(cfg.state_dir, "jobs.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert jobqueue.run_pending(cfg, lambda *_: pytest.fail("ran twice")) == []
    finally:
        os.close(fd)
    assert jobqueue.pending(cfg) == ["00000000000000000001.json"]


def test_slots_for_scheduled_checks_and_drills(tmp_path):
    cfg = cfg_at(tmp_path)
    cfg.verify.check_interval_s, cfg.verify.check_offset_s = WEEK, 3 * DAY + 3600
    monday = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
    # the epoch is a Thursday: offset 3 days + 1 h is Sunday 01:00
    assert verify_schedule.next_slot(monday, WEEK, cfg.verify.check_offset_s) == (
        datetime(2026, 12, 6, 1, tzinfo=UTC).timestamp()
    )
    started = monday
    assert not verify_schedule.check_due(cfg, monday + 3600, started)
    assert verify_schedule.check_due(cfg, datetime(2026, 12, 6, 1, tzinfo=UTC).timestamp(), started)
    save_state(cfg, last_check_at="2026-12-06T01:05:00Z")
    assert not verify_schedule.check_due(
        cfg, datetime(2026, 12, 7, tzinfo=UTC).timestamp(), started
    )
    # a drill waits for a first backup, and nothing is scheduled with interval 0
    cfg.verify.drill_interval_s = DAY
    assert not verify_schedule.drill_due(cfg, monday + 2 * DAY, started)
    save_state(cfg, last_backup_at="2026-11-30T02:00:00Z")
    assert verify_schedule.drill_due(cfg, monday + 2 * DAY, started)
    cfg.verify.drill_interval_s = 0
    assert not verify_schedule.drill_due(cfg, monday + 2 * DAY, started)


def test_verify_data_comes_in_turn(tmp_path):
    cfg = cfg_at(tmp_path)
    assert not verify_schedule.verify_data_due(cfg)  # 0: never on the schedule
    cfg.verify.verify_data_interval_s = 4 * WEEK
    assert verify_schedule.verify_data_due(cfg)  # never done yet
    save_state(cfg, last_verify_data_at="2026-12-01T00:00:00Z")
    start = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert not verify_schedule.verify_data_due(cfg, start + 3 * WEEK)
    assert verify_schedule.verify_data_due(cfg, start + 4 * WEEK)


def _validate(tmp_path, **extra):
    (tmp_path / "s").mkdir(exist_ok=True)
    data = {"repository": "/r", "sources": [str(tmp_path / "s")], "passphrase_file": "/p", **extra}
    return config_mod.validate(data, str(tmp_path / "agent.json"), check_paths=False)


def test_verify_config_is_checked(tmp_path):
    cfg = _validate(
        tmp_path, verify={"check_interval_s": WEEK, "check_offset_s": 5, "drill_count": 7}
    )
    assert (cfg.verify.check_interval_s, cfg.verify.check_offset_s) == (WEEK, 5)
    assert cfg.verify.drill_count == 7 and cfg.verify.drill_interval_s == 0
    for bad, message in (
        ({"check_every": 1}, "unknown config key 'verify.check_every'"),
        ({"drill_interval_s": -1}, "verify.drill_interval_s"),
        ({"drill_interval_s": DAY, "drill_offset_s": DAY}, "must be less than"),
    ):
        with pytest.raises(AgentError, match=message):
            _validate(tmp_path, verify=bad)


def test_state_writers_in_threads_lose_nothing(tmp_path):
    """The daemon's heartbeat and worker threads write the state file at once."""
    import threading

    from saveos_agent.state import load_state

    cfg = cfg_at(tmp_path)

    def writer(n: int) -> None:
        for i in range(50):
            save_state(cfg, **{f"k{n}_{i}": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(load_state(cfg)) == 200


def test_the_work_is_niced_and_the_heartbeat_is_not():
    """A host saturated by its own work must still say it is alive: an idle-class heartbeat could
    starve behind constant IO and the host would turn silent while only busy."""
    units = REPO_ROOT / "roles" / "saveos_agent" / "templates"

    def directives(name: str) -> set[str]:
        text = (units / f"saveos-agent-{name}.service.j2").read_text()
        return {line.strip() for line in text.splitlines() if "=" in line}

    for work in ("backup", "check", "drill", "jobs"):
        assert {"Nice=10", "IOSchedulingClass=idle"} <= directives(work), work
    heartbeat = directives("heartbeat")
    assert not any(d.startswith(("Nice=", "IOSchedulingClass=", "CPUWeight=")) for d in heartbeat)
