#!/usr/bin/python
"""Probe the controller's side of a deploy for a whole play: the zipapp and the escrow store."""

from __future__ import annotations

# Ansible modules keep their documentation strings above the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: saveos_escrow_state
short_description: Check the agent zipapp and the escrow store for a whole play in one call
description:
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)). Reports whether the agent
    zipapp is missing, older than its sources or current, and its SHA-256; and for every host
    whether its escrow directory, escrowed passphrase and escrowed repository key are in place
    with private modes.
  - Checks each host's settings against the rules the agent and the API apply (module_utils
    saveos_rules, the same file): its name, its backup and heartbeat intervals, its retention.
  - Changes nothing and never reads a secret's content, so it always reports C(changed=false) and
    behaves the same in check mode. The role's task-by-task path creates what is missing.
version_added: "0.1.0"
author: SaveOS
options:
  artifact:
    description: The agent zipapp on the controller.
    type: path
    required: true
  source_dir:
    description: The agent sources the zipapp is built from.
    type: path
    required: true
  escrow_dir:
    description: The escrow store.
    type: path
    required: true
  host_escrows:
    description: Inventory host name to that host's escrow directory.
    type: dict
    required: true
  host_settings:
    description: >-
      One [host, backup_interval_s, heartbeat_interval_s, retention] per host (an empty
      retention is the agent's default).
    type: list
    elements: list
    default: []
"""

EXAMPLES = r"""
- name: Check the zipapp and the escrow store once for the play
  saveos_escrow_state:
    artifact: dist/saveos-agent.pyz
    source_dir: agent
    escrow_dir: /root/.local/share/saveos/escrow
    host_escrows: {web1: /root/.local/share/saveos/escrow/web1}
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
artifact_state:
  description: C(missing), C(outdated) or C(current).
  type: str
  returned: always
artifact_sha256:
  description: SHA-256 of the zipapp, or null when it is missing.
  type: str
  returned: always
hosts:
  description: >-
    Per host C(passphrase) (the escrowed passphrase exists), C(ready) (escrow store, host
    directory, passphrase and key all present and private) and C(problems) (what is wrong
    with the host's name or settings, one sentence each; empty when nothing is).
  type: dict
  returned: always
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saveos_rules import (
    NAME_MAX_LENGTH,
    interval_problems,
    is_valid_name,
    private_file_problem,
    retention_problems,
)


def mode_is(path: str, want: int, directory: bool) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(st.st_mode) and stat.S_IMODE(st.st_mode) == want


def is_private(path: str) -> bool:
    try:
        return private_file_problem(path) is None
    except OSError:
        return False


def setting_problems(host: str, settings: dict) -> list:
    """What the agent or the API would refuse in this host's settings, named as role variables."""
    problems = []
    if not is_valid_name(host):
        problems.append(
            f"the inventory name {host!r} is not a valid host name (letters, digits, '.', '_',"
            f" '-', at most {NAME_MAX_LENGTH})"
        )
    intervals = interval_problems(
        _as_int(settings.get("backup_interval_s")), _as_int(settings.get("heartbeat_interval_s"))
    )
    retention = settings.get("retention") or {}
    for key, problem in intervals + (retention_problems(retention) if retention else []):
        problems.append(f"saveos_agent_{key} {problem}")
    return problems


def _as_int(value):
    # Inventory values arrive as strings as often as numbers ("3600" from an INI inventory).
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def artifact_state(artifact: str, source_dir: str, sha256) -> tuple[str, str | None]:
    try:
        st = os.stat(artifact)
    except FileNotFoundError:
        return "missing", None
    if st.st_size == 0:
        return "missing", None
    for root, _dirs, names in os.walk(source_dir):
        for name in names:
            if name.endswith(".py") and os.stat(os.path.join(root, name)).st_mtime > st.st_mtime:
                return "outdated", None
    return "current", sha256(artifact)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "artifact": {"type": "path", "required": True},
            "source_dir": {"type": "path", "required": True},
            "escrow_dir": {"type": "path", "required": True},
            "host_escrows": {"type": "dict", "required": True},
            "host_settings": {"type": "list", "elements": "list", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    state, sha256 = artifact_state(p["artifact"], p["source_dir"], module.sha256)
    store_ok = mode_is(p["escrow_dir"], 0o700, directory=True)
    settings = {
        row[0]: {"backup_interval_s": row[1], "heartbeat_interval_s": row[2], "retention": row[3]}
        for row in p["host_settings"]
    }
    hosts = {}
    for host, path in p["host_escrows"].items():
        passphrase = os.path.join(path, "passphrase")
        hosts[host] = {
            "passphrase": os.path.isfile(passphrase),
            "ready": store_ok
            and mode_is(path, 0o700, directory=True)
            and is_private(passphrase)
            and is_private(os.path.join(path, "key.export")),
            "problems": setting_problems(host, settings.get(host) or {}),
        }
    module.exit_json(changed=False, artifact_state=state, artifact_sha256=sha256, hosts=hosts)


if __name__ == "__main__":
    main()
