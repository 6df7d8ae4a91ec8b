"""R6 unreachable host: with lab3 down, `saveos deploy` and `saveos backup` converge lab1 and
lab2, name lab3 and exit 2; once lab3 is back, the same commands converge all three."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]
DOWN = "lab3"


def test_r6_one_host_down_then_back(fleet, figures):
    inventory = str(fleet.inventory)
    host = next(h for h in fleet.lab.hosts() if h.name == DOWN)
    os.kill(host.sshd_pid, signal.SIGKILL)  # PID 1 of the host: its whole namespace dies
    deadline = time.monotonic() + 10
    while fleet.sh(DOWN, "true", timeout=5).returncode == 0:
        assert time.monotonic() < deadline, "lab3 still answers"
        time.sleep(0.2)
    try:
        down = {
            "deploy": fleet.saveos("deploy", "--inventory", inventory),
            "backup": fleet.saveos("backup", "--inventory", inventory),
        }
        for name, result in down.items():
            text = result.stdout + result.stderr
            assert result.returncode == 2, (name, text[-3000:])
            assert DOWN in text and "Traceback" not in text, (name, text[-3000:])
        # The reachable hosts did back up: each has a fresh archive in the results table.
        backup_text = down["backup"].stdout
        for up in ("lab1", "lab2"):
            log = fleet.sh(up, "tail -n 40 /var/log/saveos/agent.log").stdout
            assert f"{up}-" in backup_text, backup_text[-3000:] + f"\n{up} agent log:\n" + log
    finally:
        fleet.lab.up(len(fleet.hosts))  # restarts the dead host, keeps the others
    again = {
        "deploy": fleet.saveos("deploy", "--inventory", inventory),
        "backup": fleet.saveos("backup", "--inventory", inventory),
    }
    for name, result in again.items():
        assert result.returncode == 0, (name, (result.stdout + result.stderr)[-3000:])
    assert f"{DOWN}-" in again["backup"].stdout
    line = next(
        (
            ln.strip()
            for ln in (down["deploy"].stdout + down["deploy"].stderr).splitlines()
            if DOWN in ln
        ),
        "",
    )
    figures.append(
        f"R6 unreachable host: with {DOWN} down deploy and backup exit 2 naming it "
        f"({line[:80]!r}), lab1+lab2 backed up; after restart 3/3 converge (exit 0)"
    )
