"""The playbooks' inputs: the saveos_ names, and until SaveOS 0.3.0 the old unprefixed ones
(docs/GLOSSARY.md, "Deprecated names"). Run for real on this machine (connection local): the
playbooks call the real agent zipapp, which runs the real borg on a scratch repository. The old
names still work and say so in one line that names no value; the new name wins over the old;
the CLI sends only the new names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import cli_support
import pytest
import yaml
from agent_support import SYSTEM_PYTHON, AgentHost, build_pyz, make_tree
from ansible_support import REPO_ROOT, ansible_env, explain, playbook

pytestmark = pytest.mark.borg

SEED = "data/small-07.txt"  # under the host's one source directory


@dataclass
class Host:
    agent: AgentHost
    inventory: Path  # localhost, whose playbooks run this agent
    archive: str  # of its one backup
    member: str  # SEED's path in the archive (borg drops the leading /)
    wrapper: Path  # runs the agent with its config

    def restored(self, target: Path) -> bool:
        got = target / self.member
        return got.is_file() and got.read_bytes() == (self.agent.src / SEED).read_bytes()


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Host:
    root = tmp_path_factory.mktemp("inputs")
    agent = AgentHost(root / "host", build_pyz(tmp_path_factory))
    make_tree(agent.src)
    agent.init()
    rc, made = agent.json("backup")
    assert rc == 0 and made["archive"], made
    wrapper = root / "saveos-agent"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"BORG_BASE_DIR={agent.env['BORG_BASE_DIR']} exec {SYSTEM_PYTHON} {agent.pyz}"
        f' --config {agent.config_path} "$@"\n'
    )
    wrapper.chmod(0o700)
    local = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,  # the playbooks become root; the test already is (or is not)
        "saveos_agent_wrapper": str(wrapper),  # every playbook's agent command
    }
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": local}}}))
    return Host(agent, inventory, made["archive"], str(agent.src / SEED).lstrip("/"), wrapper)


def _env() -> dict[str, str]:
    """No ANSIBLE_* or BORG_* of the caller's: the repository's ansible.cfg, the wrapper's borg."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "BORG_"))}
    return ansible_env({"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")}, base=clean)


def play(inventory: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return playbook(inventory, f"playbooks/{name}", *extra, env=_env(), timeout=300)


def task_msg(result: subprocess.CompletedProcess, task: str) -> object:
    """The `msg` a debug task showed (the callback may fold it over lines), or None if skipped."""
    after = result.stdout.split(f"TASK [{task}]", 1)[1].split("\n", 1)[1]
    shown = after.split("\n\n", 1)[0]
    if "=>" not in shown:
        return None
    return yaml.safe_load(textwrap.dedent(shown.split("=>", 1)[1].lstrip(" ").lstrip("\n")))["msg"]


def warned(result: subprocess.CompletedProcess) -> str | None:
    return task_msg(result, "Warn about deprecated input names")


def shown(result: subprocess.CompletedProcess) -> dict:
    """The agent's JSON result the playbook's last task shows."""
    return task_msg(result, "Show the result")


def test_the_old_names_still_work_and_warn_in_one_line(host, tmp_path):
    target = tmp_path / "old-names"
    result = play(
        host.inventory, "restore.yml", "-e", f"archive={host.archive}", "-e", f"target={target}",
        "-e", json.dumps({"paths": [host.member]}),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert host.restored(target)
    said = warned(result)
    assert said == (
        "DEPRECATED: archive, paths, target: use saveos_archive, saveos_paths, saveos_target"
        " (the old names go in SaveOS 0.3.0)"
    ), explain(result)
    assert result.stdout.count("DEPRECATED") == 1  # one line, not one per task or host

    check = play(host.inventory, "check.yml", "-e", "verify_data=true")
    assert check.returncode == 0, explain(check)
    assert shown(check)["verify_data"] is True
    assert warned(check).startswith("DEPRECATED: verify_data: use saveos_verify_data ")

    drill = play(host.inventory, "drill.yml", "-e", "drill_count=3")
    assert drill.returncode == 0, explain(drill)
    assert shown(drill)["files_checked"] == 3, explain(drill)
    assert warned(drill).startswith("DEPRECATED: drill_count: use saveos_drill_count ")


def test_the_warning_names_no_value(host, tmp_path):
    secret = "s3cr3t-" + os.urandom(6).hex()
    result = play(
        host.inventory, "restore.yml", "-e", f"archive={secret}",
        "-e", f"target={tmp_path / secret}",
    )  # fmt: skip
    assert result.returncode == 2, explain(result)  # no such archive: the agent says so
    assert warned(result).startswith("DEPRECATED: archive, target: use "), explain(result)
    assert secret not in warned(result)


def test_the_new_names_win_and_do_not_warn(host, tmp_path):
    target = tmp_path / "new-names"
    result = play(
        host.inventory, "restore.yml", "-e", f"saveos_archive={host.archive}",
        "-e", f"saveos_target={target}", "-e", json.dumps({"saveos_paths": [host.member]}),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert host.restored(target)
    assert warned(result) is None and "DEPRECATED" not in result.stdout, explain(result)

    # Both given: the new name is used, the old one only warned about.
    both, old = tmp_path / "both", tmp_path / "old-target"
    result = play(
        host.inventory, "restore.yml", "-e", f"saveos_archive={host.archive}",
        "-e", "archive=nonesuch", "-e", f"saveos_target={both}", "-e", f"target={old}",
        "-e", json.dumps({"saveos_paths": [host.member]}),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert host.restored(both) and not old.exists()
    assert warned(result).startswith(
        "DEPRECATED: archive, target: use saveos_archive, saveos_target"
    )

    check = play(
        host.inventory, "check.yml", "-e", "saveos_verify_data=true", "-e", "verify_data=0"
    )
    assert check.returncode == 0, explain(check)
    assert shown(check)["verify_data"] is True
    plain = play(host.inventory, "check.yml")
    assert plain.returncode == 0, explain(plain)
    assert shown(plain)["verify_data"] is False and warned(plain) is None

    drill = play(host.inventory, "drill.yml", "-e", "saveos_drill_count=2", "-e", "drill_count=5")
    assert drill.returncode == 0, explain(drill)
    assert shown(drill)["files_checked"] == 2, explain(drill)

    # A missing input gets the playbook's own message, in the new names.
    bad = play(host.inventory, "restore.yml", "-e", f"saveos_target={tmp_path / 'x'}")
    assert bad.returncode == 2, explain(bad)
    assert "Give -e saveos_archive=NAME and either -e saveos_target=" in bad.stdout, explain(bad)


def test_the_cli_sends_only_the_new_names(host, tmp_path):
    """`saveos restore` and `saveos check --verify-data` run the same playbooks: they act (so
    the names reached them) and the deprecation task is skipped (so no old name did)."""
    env = _env()
    env.pop("ANSIBLE_CONFIG")  # the CLI points ansible at its own ansible.cfg
    env.update(SAVEOS_API_URL="http://127.0.0.1:9", SAVEOS_DATA_DIR=str(tmp_path / "data"))
    skipped = "TASK Warn about deprecated input names\n  localhost: skipped\n"

    def saveos(*args: str) -> subprocess.CompletedProcess:
        return cli_support.saveos(*args, env=env, cwd=tmp_path, timeout=600)

    target = tmp_path / "cli"
    done = saveos(
        "restore", "localhost", "-i", str(host.inventory), "--archive", host.archive,
        "--path", host.member, "--target", str(target),
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    assert host.restored(target)
    assert skipped in done.stdout, explain(done)

    spool = host.agent.root / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    checked = saveos("check", "-i", str(host.inventory), "--verify-data")
    assert checked.returncode == 0, explain(checked)
    assert skipped in checked.stdout, explain(checked)
    # The API is down: the agent spooled its check report, which says it read every chunk.
    spooled = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    checks = [r["body"] for r in spooled if r["path"].endswith("/checks")]
    assert [c["verify_data"] for c in checks] == [True], spooled


def test_an_inventory_variable_named_like_an_old_input_is_not_an_input(host, tmp_path):
    """As in 0.1.0 only -e set the unprefixed inputs: a host's `database` or `verify_data` of
    some other role neither turns a file restore into a database load nor warns."""
    inventory = yaml.safe_load(host.inventory.read_text())
    inventory["all"]["hosts"]["localhost"].update(
        database="someone_elses", force=True, verify_data=True
    )
    shared = tmp_path / "inventory.yml"
    shared.write_text(yaml.safe_dump(inventory))
    target = tmp_path / "files"
    result = play(
        shared, "restore.yml", "-e", f"saveos_archive={host.archive}",
        "-e", f"saveos_target={target}", "-e", json.dumps({"saveos_paths": [host.member]}),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert host.restored(target)
    assert warned(result) is None, explain(result)

    check = play(shared, "check.yml")
    assert check.returncode == 0, explain(check)
    assert shown(check)["verify_data"] is False
    assert warned(check) is None, explain(check)


def _without_wrapper(host: Host, tmp_path: Path, **hostvars) -> Path:
    """The host's inventory without saveos_agent_wrapper (the role's default path then, which
    this machine lacks), plus `hostvars`."""
    inventory = yaml.safe_load(host.inventory.read_text())
    local = inventory["all"]["hosts"]["localhost"]
    del local["saveos_agent_wrapper"]
    local.update(hostvars)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def test_one_name_for_the_agent_command_in_every_playbook(host, tmp_path):
    """saveos_agent_wrapper (from the inventory, as the fixture's) runs the agent in backup.yml
    too; the old per-playbook names still work from -e and warn; an inventory variable of an old
    name is not an input (as in 0.1.0, where restore.yml's was a play var)."""
    before = len(host.agent.archives())
    backup = play(host.inventory, "backup.yml")
    assert backup.returncode == 0, explain(backup)
    assert len(host.agent.archives()) == before + 1
    assert "DEPRECATED" not in backup.stdout

    bare = _without_wrapper(host, tmp_path)
    missing = play(bare, "backup.yml")  # the role's default: no agent there on this machine
    assert missing.returncode != 0 and "/usr/local/bin/saveos-agent" in missing.stdout, explain(
        missing
    )
    new = play(bare, "backup.yml", "-e", f"saveos_agent_wrapper={host.wrapper}")
    assert new.returncode == 0, explain(new)

    check = play(bare, "check.yml", "-e", f"saveos_check_agent={host.wrapper}")
    assert check.returncode == 0, explain(check)
    assert shown(check)["verify_data"] is False
    assert warned(check) == (
        "DEPRECATED: saveos_check_agent: use saveos_agent_wrapper"
        " (the old names go in SaveOS 0.3.0)"
    ), explain(check)
    drill = play(bare, "drill.yml", "-e", f"saveos_drill_agent={host.wrapper}")
    assert drill.returncode == 0 and shown(drill)["files_checked"] == 20, explain(drill)
    assert warned(drill).startswith("DEPRECATED: saveos_drill_agent: use saveos_agent_wrapper ")
    target = tmp_path / "old-agent"
    restore = play(
        bare, "restore.yml", "-e", f"saveos_restore_agent={host.wrapper}",
        "-e", f"saveos_archive={host.archive}", "-e", f"saveos_target={target}",
        "-e", json.dumps({"saveos_paths": [host.member]}),
    )  # fmt: skip
    assert restore.returncode == 0, explain(restore)
    assert host.restored(target)
    assert warned(restore).startswith("DEPRECATED: saveos_restore_agent: use saveos_agent_wrapper")

    # The new name wins over an old one; an old one in the inventory neither acts nor warns.
    leaky = _without_wrapper(host, tmp_path, saveos_check_agent=str(host.wrapper))
    ignored = play(leaky, "check.yml")
    assert ignored.returncode != 0 and warned(ignored) is None, explain(ignored)
    both = play(host.inventory, "check.yml", "-e", "saveos_check_agent=/nonexistent/saveos-agent")
    assert both.returncode == 0, explain(both)
    assert warned(both).startswith("DEPRECATED: saveos_check_agent: ")
