"""The `saveos.fleet` collection: build the tarball, install it offline, parse its playbooks.

Runs in a tmp cwd (no repo ansible.cfg, no roles_path) so the role can only come from the
installed collection, and builds the agent zipapp from the collection's own copy of agent/.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import ansible_support
import pytest
from ansible_support import BIN, ansible_env, explain
from conftest import REPO_ROOT

BUILD = REPO_ROOT / "collections" / "build.py"
USES_FQCN = """\
- name: Deploy through the collection
  hosts: all
  gather_facts: false
  roles:
    - role: saveos.fleet.saveos_agent
"""


def run(argv: list[str], cwd: Path, collections: Path | None) -> subprocess.CompletedProcess:
    """`argv` with none of our ANSIBLE_* settings: roles only from `collections` (or none)."""
    own = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    settings = {
        "ANSIBLE_COLLECTIONS_PATH": str(collections) if collections else str(cwd / "none"),
        "ANSIBLE_LOCAL_TEMP": str(cwd / "ansible-tmp"),
    }
    return ansible_support.run(argv, cwd=cwd, env=ansible_env(settings, base=own), timeout=60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(work dir, collections dir) with saveos.fleet built from this checkout and installed."""
    work = tmp_path_factory.mktemp("collection")
    built = run(
        [str(BIN / "python"), str(BUILD),
         "--work", str(work / "assemble"), "--out", str(work / "dist")],
        cwd=work, collections=None,
    )  # fmt: skip
    assert built.returncode == 0, explain(built)
    with open(REPO_ROOT / "pyproject.toml", "rb") as fh:
        version = tomllib.load(fh)["project"]["version"]
    tarball = work / "dist" / f"saveos-fleet-{version}.tar.gz"
    assert built.stdout.strip() == str(tarball) and tarball.is_file()
    collections = work / "collections"
    install = run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--offline",
         "-p", str(collections), str(tarball)],
        cwd=work, collections=collections,
    )  # fmt: skip
    assert install.returncode == 0, explain(install)
    return work, collections


def test_playbooks_parse_with_the_fqcn_role(installed):
    work, collections = installed
    root = collections / "ansible_collections" / "saveos" / "fleet"
    assert (root / "MANIFEST.json").is_file()
    assert not any(p.is_symlink() for p in root.rglob("*"))
    # The role's own modules ship as the collection's (a role library/ is not searched there).
    for module in ("saveos_agent_state", "saveos_escrow_state", "saveos_provision"):
        assert (root / "plugins" / "modules" / f"{module}.py").is_file()
    # And the host module's controller half: it keeps the escrowed secrets on the controller.
    assert (root / "plugins" / "action" / "saveos_agent_state.py").is_file()
    # Not beside collections/: Ansible would find a playbook-adjacent collections dir by itself.
    plays = work / "plays"
    plays.mkdir()
    (plays / "uses_fqcn.yml").write_text(USES_FQCN)
    playbooks = [
        str(plays / "uses_fqcn.yml"),
        "saveos.fleet.deploy",
        "saveos.fleet.site",
        "saveos.fleet.uninstall",
        # these two import playbooks/tasks/ (site.yml too, through check.yml)
        "saveos.fleet.restore",
        "saveos.fleet.drill",
    ]
    check = [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", *playbooks]
    result = run(check, cwd=plays, collections=collections)
    assert result.returncode == 0, explain(result)
    for name in ("deploy", "site", "uninstall", "restore", "drill"):
        assert f"{root}/playbooks/{name}.yml" in result.stdout, explain(result)
    # Without the collection on the path the same check fails: the role really came from it.
    missing = run(check[:-5], cwd=plays, collections=None)
    assert missing.returncode != 0
    assert "saveos.fleet.saveos_agent" in missing.stdout + missing.stderr


def test_the_installed_role_builds_the_agent_from_the_collection(installed):
    """The role's saveos_agent_source_dir default, templated by Ansible, holds a complete agent."""
    work, collections = installed
    role = collections / "ansible_collections" / "saveos" / "fleet" / "roles" / "saveos_agent"
    out = work / "source_dir.txt"
    result = run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"@{role}/defaults/main.yml", "-e", f"role_path={role}",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", "ansible.builtin.copy",
         "-a", f"content={{{{ saveos_agent_source_dir }}}} dest={out} mode=0600"],
        cwd=work, collections=collections,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    source_dir = Path(out.read_text()).resolve()
    assert source_dir == (collections / "ansible_collections" / "saveos" / "fleet" / "agent")
    # Same argv as the role's "Build the agent zipapp on the controller" task.
    pyz = work / "from-collection.pyz"
    built = run(
        [sys.executable, str(source_dir / "build.py"), "--out", str(pyz)],
        cwd=work,
        collections=None,
    )
    assert built.returncode == 0, explain(built)
    reference = work / "from-repo.pyz"
    run(
        [sys.executable, str(REPO_ROOT / "agent" / "build.py"), "--out", str(reference)], work, None
    )
    # The build is deterministic: byte-equal means no agent source was left out of the collection.
    assert pyz.read_bytes() == reference.read_bytes()
    version = subprocess.run(
        ["/usr/bin/python3", str(pyz), "--version"], capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0 and version.stdout.startswith("saveos-agent "), version


def test_the_build_refuses_a_role_reference_it_cannot_rewrite(tmp_path):
    """A new playbook that names the role in another form must not ship unqualified."""
    spec = importlib.util.spec_from_file_location("collection_build", BUILD)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    src = tmp_path / "playbooks"
    src.mkdir()
    (src / "flow.yml").write_text("- hosts: all\n  roles: [saveos_agent]\n")
    with pytest.raises(SystemExit, match=r"flow\.yml.*saveos_agent"):
        build.copy_playbooks(src, tmp_path / "out")
    (src / "flow.yml").write_text("- hosts: all\n  roles:\n    - name: saveos_agent\n")
    build.copy_playbooks(src, tmp_path / "ok")
    assert "name: saveos.fleet.saveos_agent\n" in (tmp_path / "ok" / "flow.yml").read_text()


def test_the_collections_escrow_schedule_runs_its_shared_role(installed):
    """The controller schedules include saveos_controller_schedule by its FQCN inside the
    collection: a real run of saveos.fleet.escrow-schedule (cron, into a scratch file)."""
    work, collections = installed
    root = collections / "ansible_collections" / "saveos" / "fleet"
    for role in ("saveos_escrow_schedule", "saveos_prune_schedule"):
        tasks = (root / "roles" / role / "tasks" / "main.yml").read_text()
        assert "name: saveos.fleet.saveos_controller_schedule\n" in tasks, tasks
    cron = work / "saveos-escrow-verify"
    # by path: a hyphen is not allowed in a playbook's FQCN (saveos.fleet.escrow-schedule)
    playbook = root / "playbooks" / "escrow-schedule.yml"
    result = run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook),
         "-e", "ansible_service_mgr=cron", "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"saveos_escrow_schedule_cron_file={cron}",
         "-e", "saveos_escrow_schedule_inventory=/srv/saveos/hosts.yml"],
        cwd=work, collections=collections,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert "escrow verify --inventory /srv/saveos/hosts.yml --method auto" in cron.read_text()
