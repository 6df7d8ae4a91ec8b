"""The controller's schedules (roles saveos_prune_schedule and saveos_escrow_schedule, both on
saveos_controller_schedule): each writes a cron entry (no systemd here) that runs its `saveos`
command on the inventory with no secret in it, changes nothing when run again, refuses bad
input, and removes the entry again. The systemd timers and a real run of the escrow schedule's
cron command line are proven on a systemd lab host in test_systemd_lab.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ansible_support
import pytest
from conftest import REPO_ROOT

SCHEDULES = {
    # role prefix: (playbook, cron file, the line's schedule, the command after `saveos`)
    "prune": ("prune-schedule.yml", "saveos-prune", "30 3 * * *", "prune --inventory {inv}"),
    "escrow": (
        "escrow-schedule.yml",
        "saveos-escrow-verify",
        "30 4 * * 0",
        "escrow verify --inventory {inv} --method auto",
    ),
}


def _play(tmp_path: Path, role: str, *extra: str) -> subprocess.CompletedProcess:
    playbook, cron_file, _, _ = SCHEDULES[role]
    prefix = f"saveos_{role}_schedule"
    return ansible_support.playbook(
        "localhost,", REPO_ROOT / "playbooks" / playbook,
        "-e", "ansible_service_mgr=cron", "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", f"{prefix}_cron_file={tmp_path / cron_file}",
        "-e", f"{prefix}_data_dir={tmp_path / 'data'}",
        "-e", f"{prefix}_inventory={tmp_path / 'inventory.yml'}", *extra,
        timeout=300,
    )  # fmt: skip


def cron_line(path: Path) -> str:
    return next(ln for ln in path.read_text().splitlines() if ln and ln[0] not in "#S")


@pytest.mark.parametrize("role", sorted(SCHEDULES))
def test_cron_schedule_runs_its_command_and_is_removed(tmp_path, role):
    _, cron_file, when, command = SCHEDULES[role]
    inventory = tmp_path / "inventory.yml"
    made = _play(tmp_path, role)
    assert made.returncode == 0, made.stdout + made.stderr
    line = cron_line(tmp_path / cron_file)
    assert line.startswith(f"{when} root "), line
    assert line.endswith("/saveos " + command.format(inv=inventory)), line
    assert f"SAVEOS_DATA_DIR={tmp_path / 'data'}" in line
    assert "TOKEN" not in line.upper()
    again = _play(tmp_path, role)
    assert "changed=0" in again.stdout, again.stdout
    gone = _play(tmp_path, role, "-e", f"saveos_{role}_schedule_state=absent")
    assert gone.returncode == 0, gone.stdout
    assert not (tmp_path / cron_file).exists()


def test_escrow_schedule_refuses_a_bad_method_and_a_missing_inventory(tmp_path):
    bad = _play(tmp_path, "escrow", "-e", "saveos_escrow_schedule_method=magic")
    assert bad.returncode != 0
    assert "magic" in bad.stdout and "Traceback" not in bad.stdout + bad.stderr, bad.stdout
    empty = _play(tmp_path, "escrow", "-e", "saveos_escrow_schedule_inventory=")
    assert empty.returncode != 0 and "saveos_escrow_schedule_inventory" in empty.stdout
    assert not (tmp_path / "saveos-escrow-verify").exists()
