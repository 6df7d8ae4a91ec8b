"""The central prune's schedule on the controller: the role writes a cron entry (no systemd
here) that runs `saveos prune` on the inventory with no secret in it, and removes it again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def _play(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    playbook = REPO_ROOT / "playbooks" / "prune-schedule.yml"
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook),
         "-e", "ansible_service_mgr=cron", "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"saveos_prune_schedule_cron_file={tmp_path / 'saveos-prune'}",
         "-e", f"saveos_prune_schedule_data_dir={tmp_path / 'data'}", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cron_schedule_runs_saveos_prune_and_is_removed(tmp_path):
    inventory = tmp_path / "inventory.yml"
    made = _play(tmp_path, "-e", f"saveos_prune_schedule_inventory={inventory}")
    assert made.returncode == 0, made.stdout + made.stderr
    entry = (tmp_path / "saveos-prune").read_text()
    line = next(ln for ln in entry.splitlines() if "prune" in ln and not ln.startswith("#"))
    assert line.startswith("30 3 * * * root ")
    assert f"--inventory {inventory}" in line and f"SAVEOS_DATA_DIR={tmp_path / 'data'}" in line
    assert "TOKEN" not in line.upper()
    again = _play(tmp_path, "-e", f"saveos_prune_schedule_inventory={inventory}")
    assert "changed=0" in again.stdout
    gone = _play(
        tmp_path, "-e", f"saveos_prune_schedule_inventory={inventory}",
        "-e", "saveos_prune_schedule_state=absent",
    )  # fmt: skip
    assert gone.returncode == 0, gone.stdout
    assert not (tmp_path / "saveos-prune").exists()
