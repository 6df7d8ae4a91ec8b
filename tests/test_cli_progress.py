"""The event reducer on events recorded from a real ansible-runner run, and the runner live."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import free_port, lab_net
from rich.console import Console

from saveos_cli import progress
from saveos_cli.progress import RunState, apply_event, reduce_events

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA / "tiny"))
from make_inventory import write_inventory  # noqa: E402

RECORDED = json.loads((DATA / "runner_events.json").read_text())


def _counts(state: RunState, host: str) -> dict:
    h = state.hosts[host]
    return {
        "ok": h.ok,
        "changed": h.changed,
        "failed": h.failed,
        "dark": h.unreachable,
        "skipped": h.skipped,
        "ignored": h.ignored,
    }


def _stats_counts(stats: dict, host: str) -> dict:
    return {
        "ok": stats["ok"].get(host, 0),
        "changed": stats["changed"].get(host, 0),
        "failed": stats["failures"].get(host, 0),
        "dark": stats["dark"].get(host, 0),
        "skipped": stats["skipped"].get(host, 0),
        "ignored": stats["ignored"].get(host, 0),
    }


def test_reducer_counts_match_ansible_recap_on_recorded_events():
    # Counted from the per-host events alone (the stats event would overwrite them), Ansible's
    # own recap is the oracle for every host and every counter.
    running = reduce_events([e for e in RECORDED["events"] if e["event"] != "playbook_on_stats"])
    for host in ("local1", "local2", "down1"):
        assert _counts(running, host) == _stats_counts(RECORDED["stats"], host), host
    state = reduce_events(RECORDED["events"])
    for host in ("local1", "local2", "down1"):
        assert _counts(state, host) == _stats_counts(RECORDED["stats"], host), host
    assert state.stats == {k: RECORDED["stats"][k] for k in state.stats}
    assert state.hosts["local1"].outcome == "failed"
    assert state.hosts["local2"].outcome == "ok"
    assert state.hosts["down1"].outcome == "unreachable"


def test_censored_no_log_changes_settle_on_the_stats():
    """A no_log task's event carries only {"censored": …}: its change shows up with the stats."""
    ok_censored = {
        "event": "runner_on_ok",
        "event_data": {"host": "web1", "task": "Write the token", "res": {"censored": "hidden"}},
    }
    state = reduce_events([ok_censored])
    assert (state.hosts["web1"].ok, state.hosts["web1"].changed) == (1, 0)
    stats = {
        "event": "playbook_on_stats",
        "event_data": {"ok": {"web1": 1}, "changed": {"web1": 1}},
    }
    state = apply_event(state, stats)
    assert (state.hosts["web1"].ok, state.hosts["web1"].changed) == (1, 1)
    assert state.hosts["web1"].failed == state.hosts["web1"].unreachable == 0


def test_reducer_tracks_current_task_and_elapsed():
    events = RECORDED["events"]
    cut = next(
        i
        for i, e in enumerate(events)
        if e["event"] == "runner_on_start" and e["event_data"]["task"] == "Skipped task"
    )
    state = reduce_events(events[: cut + 1])
    assert state.task == "Skipped task"
    assert state.hosts["local1"].task == "Skipped task"
    assert state.hosts["local2"].task == "Ok task" or state.hosts["local2"].task == "Changed task"
    final = reduce_events(events)
    assert final.hosts["local2"].task == "Last task"
    assert final.hosts["local2"].elapsed > 0
    assert final.hosts["local2"].elapsed >= final.hosts["down1"].elapsed


def test_failures_carry_the_message_not_a_dump():
    state = reduce_events(RECORDED["events"])
    by_host = {f.host: f for f in state.failures}
    assert set(by_host) == {"local1", "down1"}  # ignore_errors failures are not failures
    assert by_host["local1"].msg == "tiny playbook fails here on purpose"
    assert by_host["local1"].task == "Failing task"
    assert by_host["down1"].unreachable and "Failed to connect" in by_host["down1"].msg
    assert "\n" not in by_host["down1"].msg and len(by_host["down1"].msg) <= progress.MSG_LIMIT


def test_reducer_is_pure():
    events = RECORDED["events"]
    state = reduce_events(events[:10])
    snapshot = (dict(state.hosts), state.task, state.failures)
    later = apply_event(state, events[10])
    assert (dict(state.hosts), state.task, state.failures) == snapshot
    assert later is not state
    assert reduce_events(events) == reduce_events(events)
    assert apply_event(state, {"event": "verbose", "stdout": "x"}) == state


def test_plain_display_and_recap_name_hosts_and_messages():
    console = Console(record=True, width=120, force_terminal=False)
    display = progress.display_for(console, "tiny")
    assert isinstance(display, progress.PlainDisplay)
    with display:
        for event in RECORDED["events"]:
            display(event)
    progress.print_recap(console, display.state)
    out = console.export_text()
    assert "TASK Failing task" in out
    assert "local1: failed: tiny playbook fails here on purpose" in out
    assert "down1: unreachable" in out
    assert "local1: ignored" in out
    assert "\x1b[" not in out
    assert out.count("tiny playbook fails here on purpose") == 2  # live line + recap line


def test_runner_live_on_tiny_playbook(tmp_path):
    """The real runner: stats from ansible-runner, events in order, no secret left on disk."""
    from saveos_cli.runner import run_playbook

    inv = write_inventory(tmp_path / "inv.json", f"{lab_net()}.99", free_port())
    secret = "tiny-" + "s3cr3t-" * 4
    events: list[dict] = []
    kept = tmp_path / "kept"
    result = run_playbook(
        DATA / "tiny" / "playbook.yml",
        inv,
        on_event=events.append,
        secret_env={"SAVEOS_TINY_SECRET": secret},
        keep_dir=kept,
    )
    assert result.status == "failed" and not result.canceled
    assert result.stats["failures"] == {"local1": 1}
    assert result.stats["dark"] == {"down1": 1}
    assert result.stats["ok"]["local2"] == 5
    state = reduce_events(events)
    for host in ("local1", "local2", "down1"):
        assert _counts(state, host) == _stats_counts(result.stats, host)
    # The playbook saw the secret through the environment ...
    last = [
        e for e in events if e["event"] == "runner_on_ok" and e["event_data"]["task"] == "Last task"
    ]
    assert last[0]["event_data"]["res"]["msg"] == "secret seen: True"
    # ... and no file of the run (env/, artifacts/, command, events) holds it.
    files = [p for p in kept.rglob("*") if p.is_file()]
    assert files, "keep_dir copied nothing"
    assert not (kept / "env").exists()
    for path in files:
        assert secret not in path.read_text(errors="replace"), path


def test_runner_refuses_missing_inventory(tmp_path):
    from saveos_cli.errors import SaveOSError
    from saveos_cli.runner import run_playbook

    with pytest.raises(SaveOSError, match="does not exist"):
        run_playbook(DATA / "tiny" / "playbook.yml", tmp_path / "nope.yml", on_event=print)


def test_ctrl_c_cancels_and_names_unfinished_hosts(tmp_path):
    """SIGINT during a long task: exit 130, the unfinished hosts named, ansible-playbook gone."""
    import json as _json
    import signal
    import subprocess
    import time

    from conftest import REPO_ROOT

    inv = tmp_path / "inv.json"
    slow_s = f"{137 + os.getpid() % 1000 / 1000:.3f}"  # this run's sleep, told apart by pgrep
    local = {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "slow_s": slow_s,
    }  # fmt: skip
    inv.write_text(_json.dumps({"all": {"hosts": {"local1": local, "local2": local}}}))
    code = (
        "import faulthandler, signal\n"
        # As from a terminal: a suite started in the background (`cmd &`) ignores SIGINT, and
        # the CLI rightly keeps an ignored SIGINT ignored.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "faulthandler.register(signal.SIGUSR1)\n"  # a hang below shows its stacks
        "from saveos_cli.app import main, app\n"
        "import typer\n"
        "from saveos_cli.commands._common import run_fleet_playbook\n"
        "@app.command('slow')\n"
        "def slow():\n"
        f"    raise typer.Exit(run_fleet_playbook({str(DATA / 'tiny' / 'slow.yml')!r},"
        f" {str(inv)!r}, title='slow')[0])\n"
        "main()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "slow"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SAVEOS_ADMIN_TOKEN": "x"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the long task runs
        if subprocess.run(["pgrep", "-f", f"sleep {slow_s}"], capture_output=True).stdout.strip():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the long task never started")
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        signals = " ".join(line for line in status if line.startswith(("SigBlk", "SigIgn")))
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no exit 60 s after Ctrl-C ({signals}); its threads:\n{err}\n{out}")
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert "interrupted during task 'Long task'" in err
    assert "unfinished: local1, local2" in err
    assert "TASK Long task" in out  # plain lines: no TTY here
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", f"sleep {slow_s}"], capture_output=True, text=True)
    assert not leftover.stdout.strip(), "the interrupted task's command was left running"


def _run_events(hosts: int, tasks: int, failing: str = ""):
    for t in range(tasks):
        yield {"event": "playbook_on_task_start", "event_data": {"task": f"task {t}"}}
        for h in range(hosts):
            host = f"host{h:04d}"
            data = {"host": host, "task": f"task {t}", "res": {"changed": h % 3 == 0}}
            created = f"2026-11-25T12:{t:02d}:{h % 60:02d}"
            yield {"event": "runner_on_start", "created": created, "event_data": data}
            kind = "runner_on_failed" if host == failing else "runner_on_ok"
            yield {"event": kind, "created": created, "event_data": data}


def test_crowded_table_shows_trouble_first_and_sums_the_rest():
    state = reduce_events(_run_events(300, 3, failing="host0123"))
    table = progress.progress_table(state, "deploy", max_rows=20)
    names = [cell.plain for cell in table.columns[0]._cells]
    assert len(names) == 20 and names[-1] == "+ 281 more hosts"
    assert "host0123" in names  # failed: shown whatever its name or activity
    ok = [int(c) for c in table.columns[2]._cells]
    assert sum(ok) == sum(h.ok for h in state.hosts.values()) == 300 * 3 - 3
    failed = [int(c.plain) if hasattr(c, "plain") else int(c) for c in table.columns[4]._cells]
    assert sum(failed) == 3  # its three tasks
    small = progress.progress_table(reduce_events(_run_events(5, 1)), max_rows=20)
    assert [c.plain for c in small.columns[0]._cells] == [f"host{h:04d}" for h in range(5)]


def test_live_display_redraws_at_most_five_times_a_second(monkeypatch):
    """Redrawing per event made 200 hosts' display minutes late; now it draws on a clock."""
    import io

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    console = Console(file=io.StringIO(), force_terminal=True, width=120, height=30)
    display = progress.LiveDisplay(console, "deploy")
    draws = []
    real_draw = display._draw
    monkeypatch.setattr(display, "_draw", lambda: (draws.append(clock[0]), real_draw()))
    events = list(_run_events(200, 5))
    with display:
        for event in events:
            clock[0] += 0.01  # 2,005 events over 20 s
            display(event)
    assert 90 <= len(draws) <= 20 / progress.LiveDisplay.REDRAW_S + 2
    assert display.state == reduce_events(events)
    assert "+ 181 more hosts" in console.file.getvalue()  # kept to the terminal's height
