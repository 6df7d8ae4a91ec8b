#!/usr/bin/env python3
"""Build the `saveos.fleet` Ansible collection from roles/, playbooks/ and agent/ at the repo root.

    python3 collections/build.py [--work build/collection] [--out build]

The collection is assembled (copies, never symlinks: ansible-galaxy refuses links that leave the
collection) and packed by `ansible-galaxy collection build` into `saveos-fleet-<version>.tar.gz`.
Nothing assembled here is kept in git, so the collection cannot drift from the root sources.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
NAMESPACE, NAME = "saveos", "fleet"
ROLES = (
    "saveos_agent",
    "saveos_repo_server",
    "saveos_prune_schedule",
    "saveos_escrow_schedule",
    "saveos_controller_schedule",
)
ROLE = ROLES[0]
FQCN_ROLE = f"{NAMESPACE}.{NAME}.{ROLE}"
MODULE_UTILS = f"from ansible_collections.{NAMESPACE}.{NAME}.plugins.module_utils.saveos_"
# `role: saveos_agent` (play roles) and `name: saveos_agent` (include_role/import_role).
ROLE_REF = re.compile(rf"^([ \t]*(?:- )?(?:role|name): )({'|'.join(ROLES)})[ \t]*$", re.MULTILINE)
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyz", "*.retry")

README = f"""\
# {NAMESPACE}.{NAME}

SaveOS: centralised BorgBackup for a fleet of Linux hosts. This collection carries the roles
`{FQCN_ROLE}`, `{NAMESPACE}.{NAME}.{ROLES[1]}` (the repository server),
`{NAMESPACE}.{NAME}.{ROLES[2]}` and `{NAMESPACE}.{NAME}.{ROLES[3]}` (the controller's timers for
the central prune and the escrow proof), and the fleet playbooks (`{NAMESPACE}.{NAME}.deploy`,
`.backup`, `.check`, `.drill`, `.restore`, `.uninstall`, `.site`, `.prune`; the schedules by path,
`playbooks/prune-schedule.yml` and `playbooks/escrow-schedule.yml`: a playbook's FQCN allows no
hyphen), built from the SaveOS repository.

    ansible-playbook -i INVENTORY {NAMESPACE}.{NAME}.deploy

The agent sources ride along in `agent/`: the role builds the agent zipapp on the controller into
`dist/saveos-agent.pyz` inside the installed collection. If the collection directory is read-only
(e.g. baked into an execution environment image), set `saveos_agent_artifact` to a writable path.
See the SaveOS README, "Running under AWX / Automation Platform".
"""


def project_version() -> str:
    with open(REPO_ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def galaxy_yml(version: str) -> str:
    return f"""\
---
namespace: {NAMESPACE}
name: {NAME}
version: {version}
readme: README.md
authors:
  - SaveOS
description: Centralised BorgBackup for a Linux fleet, agent role and playbooks
license:
  - Apache-2.0
tags:
  - backup
  - borg
  - storage
  - linux
dependencies: {{}}
build_ignore:
  - dist
  - "*.pyz"
"""


def unqualified_roles(playbook: list) -> list[str]:
    """Role references in a parsed playbook that are not `saveos.fleet.*`."""
    found = []

    def check(name: object) -> None:
        if isinstance(name, str) and not name.startswith(f"{NAMESPACE}.{NAME}."):
            found.append(name)

    def walk_tasks(tasks: list | None) -> None:
        for task in tasks or []:
            for key, args in task.items():
                if key.split(".")[-1] in ("include_role", "import_role") and isinstance(args, dict):
                    check(args.get("name"))
                elif key in ("block", "rescue", "always"):
                    walk_tasks(args)

    for play in playbook or []:
        for role in play.get("roles", []):
            check(role if isinstance(role, str) else role.get("role", role.get("name")))
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            walk_tasks(play.get(section))
    return found


def copy_playbooks(src: Path, dest: Path) -> None:
    """Copy the playbooks, naming the role by its FQCN; refuse any role reference left short."""
    dest.mkdir(parents=True)
    for playbook in sorted(src.glob("*.yml")):
        text = ROLE_REF.sub(rf"\g<1>{NAMESPACE}.{NAME}.\g<2>", playbook.read_text())
        left = unqualified_roles(yaml.safe_load(text))
        if left:
            raise SystemExit(f"{playbook.name}: role reference(s) not rewritten to FQCN: {left}")
        (dest / playbook.name).write_text(text)
    # The task files the playbooks import (by a path relative to themselves).
    if (src / "tasks").is_dir():
        shutil.copytree(src / "tasks", dest / "tasks", ignore=SKIP)


def assemble(root: Path, version: str) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "galaxy.yml").write_text(galaxy_yml(version))
    (root / "README.md").write_text(README)
    (root / "meta").mkdir()
    (root / "meta" / "runtime.yml").write_text('---\nrequires_ansible: ">=2.15.0"\n')
    for role in ROLES:
        shutil.copytree(REPO_ROOT / "roles" / role, root / "roles" / role, ignore=SKIP)
        for tasks in (root / "roles" / role / "tasks").glob("*.yml"):  # include_role by FQCN
            tasks.write_text(ROLE_REF.sub(rf"\g<1>{NAMESPACE}.{NAME}.\g<2>", tasks.read_text()))
        # A role's library/ is not searched inside a collection: its modules become the
        # collection's own (plugins/modules), which the role's tasks find by their short names.
        library = root / "roles" / role / "library"
        if library.is_dir():
            shutil.copytree(library, root / "plugins" / "modules", dirs_exist_ok=True)
            shutil.rmtree(library)
        # Nor its action_plugins/: the collection's plugins/action, beside the modules they serve.
        actions = root / "roles" / role / "action_plugins"
        if actions.is_dir():
            shutil.copytree(actions, root / "plugins" / "action", dirs_exist_ok=True)
            shutil.rmtree(actions)
    # Nor is its module_utils/: it becomes the collection's, and the modules import it by FQCN.
    utils = root / "roles" / ROLE / "module_utils"
    if utils.is_dir():
        shutil.copytree(utils, root / "plugins" / "module_utils")
        shutil.rmtree(utils)
        # The module_utils import each other too (saveos_host_files uses saveos_rules).
        plugins = root / "plugins"
        for module in [*plugins.glob("modules/*.py"), *plugins.glob("module_utils/*.py")]:
            text = module.read_text()
            module.write_text(text.replace("from ansible.module_utils.saveos_", MODULE_UTILS))
    copy_playbooks(REPO_ROOT / "playbooks", root / "playbooks")
    # The role's default saveos_agent_source_dir is role_path/../../agent: the collection root.
    shutil.copytree(REPO_ROOT / "agent", root / "agent", ignore=SKIP)
    return root


def ansible_galaxy() -> str:
    beside = Path(sys.executable).parent / "ansible-galaxy"
    return str(beside) if beside.exists() else (shutil.which("ansible-galaxy") or "ansible-galaxy")


def build(work: Path, out: Path) -> Path:
    version = project_version()
    root = assemble(work / "ansible_collections" / NAMESPACE / NAME, version)
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [ansible_galaxy(), "collection", "build", str(root), "--output-path", str(out), "--force"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"ansible-galaxy collection build failed:\n{result.stdout}{result.stderr}")
    return out / f"{NAMESPACE}-{NAME}-{version}.tar.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "collection")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build")
    args = parser.parse_args(argv)
    print(build(args.work.resolve(), args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
