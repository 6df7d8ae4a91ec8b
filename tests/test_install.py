"""`pip install saveos` works outside a checkout: the wheel, built from this tree, installed into
a fresh virtualenv in a directory of its own, deploys, backs up and shows the status of a lab
host with nothing of the checkout on its path (the playbooks, the role and the agent sources
are the wheel's own package data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, ApiServer, lab_net, require_root

pytestmark = [pytest.mark.lab, pytest.mark.borg]


def run(argv: list, cwd: Path, env: dict | None = None, timeout: float = 900):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def explain(proc: subprocess.CompletedProcess) -> str:
    out, err = proc.stdout[-5000:], proc.stderr[-3000:]
    return f"rc={proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtualenv, outside the checkout, with the wheel of this tree (no extras)."""
    work = tmp_path_factory.mktemp("install")
    wheels = work / "wheels"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), REPO_ROOT],
        cwd=work,
    )
    assert built.returncode == 0, explain(built)
    (wheel,) = wheels.glob("saveos-*.whl")
    venv = work / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    assert created.returncode == 0, explain(created)
    pip = run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=work)
    assert pip.returncode == 0, explain(pip)
    return work, venv


def test_the_installed_cli_has_no_server_or_offsite_dependencies(installed):
    work, venv = installed
    probe = (
        "import importlib.util as u;"
        " print([m for m in ('fastapi', 'sqlalchemy', 'boto3') if u.find_spec(m)])"
    )
    found = run([str(venv / "bin" / "python"), "-c", probe], cwd=work)
    assert found.stdout.strip() == "[]", explain(found)
    server = run([str(venv / "bin" / "saveos"), "server"], cwd=work, env=_env(work, venv))
    assert server.returncode == 1, explain(server)
    assert "saveos[server]" in server.stderr and "Traceback" not in server.stderr
    # The lab ships beside the product for the demo: `saveos lab` is there, an add-on.
    lab = run([str(venv / "bin" / "saveos"), "lab", "--help"], cwd=work, env=_env(work, venv))
    assert lab.returncode == 0 and "SSH hosts" in lab.stdout, explain(lab)


def _env(work: Path, venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        SAVEOS_DATA_DIR=str(work / "data"),
        SAVEOS_ESCROW_DIR=str(work / "escrow"),
        COLUMNS="200",
        **extra,
    )
    return env


def test_deploy_backup_status_from_the_installed_wheel(installed):
    require_root()
    from saveos_lab.lab import Lab

    work, venv = installed
    lab = Lab(work / "lab", net=lab_net())
    lab.up(1)
    server = ApiServer(f"sqlite:///{work / 'api.db'}", work / "api").start()
    try:
        env = _env(work, venv, SAVEOS_API_URL=server.url, SAVEOS_ADMIN_TOKEN=server.admin_token)
        saveos = str(venv / "bin" / "saveos")
        inventory = str(lab.inventory_path)
        where = run(
            [str(venv / "bin" / "python"), "-c", "import saveos_cli; print(saveos_cli.__file__)"],
            cwd=work,
            env=env,
        )
        assert where.stdout.startswith(str(venv)), explain(where)  # not the checkout's
        deployed = run([saveos, "deploy", "--inventory", inventory], cwd=work, env=env)
        assert deployed.returncode == 0, explain(deployed)
        backed_up = run([saveos, "backup", "--inventory", inventory], cwd=work, env=env)
        assert backed_up.returncode == 0, explain(backed_up)
        shown = run([saveos, "status", "--json"], cwd=work, env=env)
        assert shown.returncode == 0, explain(shown)
        (agent,) = json.loads(shown.stdout)["agents"]
        assert agent["name"] == "lab1" and agent["status"] == "ok", agent
        assert agent["last_archive"].startswith("lab1-"), agent
        # The agent zipapp was built from the wheel's own copy of the agent sources.
        share = Path(where.stdout.strip()).parent / "share"
        assert (share / "dist" / "saveos-agent.pyz").is_file()
    finally:
        server.stop()
        lab.down()
