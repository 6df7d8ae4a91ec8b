"""Operator mistakes end in one sentence and an exit code, never a traceback (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cli_support
from conftest import REPO_ROOT, free_port

TOKEN = "adm_" + "x" * 40


def saveos(*args: str, env: dict | None = None, home=None) -> subprocess.CompletedProcess:
    full_env = cli_support.environ_without()
    if home is not None:
        full_env["HOME"] = str(home)
        full_env["SAVEOS_DATA_DIR"] = str(home / "data")
    full_env.update(env or {})
    return cli_support.saveos(*args, env=full_env, timeout=60)


def _one_sentence(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in first, first
    return first


def test_status_with_api_down_exits_1_in_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = saveos("--api-url", url, "status", env={"SAVEOS_ADMIN_TOKEN": TOKEN}, home=tmp_path)
    assert proc.returncode == 1
    _one_sentence(proc, "cannot reach the SaveOS API", url)
    # the token never shows up in what the operator sees
    assert TOKEN not in proc.stderr + proc.stdout


def test_api_url_from_environment(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    env = {"SAVEOS_ADMIN_TOKEN": TOKEN, "SAVEOS_API_URL": url}
    proc = saveos("snapshots", "lab1", env=env, home=tmp_path)
    assert proc.returncode == 1
    _one_sentence(proc, url)


def test_verbose_shows_the_traceback(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = saveos(
        "-v", "--api-url", url, "status", env={"SAVEOS_ADMIN_TOKEN": TOKEN}, home=tmp_path
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConnectionRefusedError" in proc.stderr


def test_no_token_anywhere(tmp_path):
    proc = saveos("status", home=tmp_path)
    assert proc.returncode == 1
    _one_sentence(proc, "no admin token")


def test_group_readable_config_file_is_refused(tmp_path):
    cfg = tmp_path / ".config" / "saveos" / "cli.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps({"admin_token": TOKEN}))
    cfg.chmod(0o640)
    proc = saveos("status", home=tmp_path)
    assert proc.returncode == 1
    _one_sentence(proc, str(cfg), "accessible by group/others")
    cfg.chmod(0o600)  # the same file, private: now the token is used and the API is the problem
    url = f"http://127.0.0.1:{free_port()}"
    proc = saveos("--api-url", url, "status", home=tmp_path)
    assert proc.returncode == 1
    _one_sentence(proc, "cannot reach")


def test_world_readable_admin_token_file_is_refused(tmp_path):
    token_file = tmp_path / "data" / "admin.token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    proc = saveos("status", home=tmp_path)
    assert proc.returncode == 1
    _one_sentence(proc, "admin.token", "0644")


def test_missing_inventory(tmp_path):
    for args in (
        ["deploy", "-i", str(tmp_path / "nope.yml")],
        ["backup", "--inventory", str(tmp_path / "nope.yml")],
        ["check", "-i", str(tmp_path / "nope")],
    ):
        proc = saveos(*args, env={"SAVEOS_ADMIN_TOKEN": TOKEN}, home=tmp_path)
        assert proc.returncode == 1, args
        _one_sentence(proc, "inventory", "does not exist")


def test_backup_without_inventory_or_via_api(tmp_path):
    proc = saveos("backup", home=tmp_path)
    assert proc.returncode == 1
    _one_sentence(proc, "--inventory")


def test_usage_error_exits_1_not_2(tmp_path):
    # click's own usage errors exit 2, which would read as "hosts failed"; ours must say usage.
    proc = saveos("status", "--no-such-option", home=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_ansible_runner_missing(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n")
    code = (
        "import sys; sys.modules['ansible_runner'] = None\n"  # import fails like an absent package
        "from saveos_cli.app import main\n"
        f"main(['deploy', '-i', {str(inv)!r}])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAVEOS_")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    _one_sentence(proc, "ansible-runner is not installed")
