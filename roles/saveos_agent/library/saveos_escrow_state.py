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
    Per host C(passphrase) (the escrowed passphrase exists) and C(ready) (escrow store, host
    directory, passphrase and key all present with private modes).
  type: dict
  returned: always
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule


def mode_is(path: str, want: int, directory: bool) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(st.st_mode) and stat.S_IMODE(st.st_mode) == want


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
        },
        supports_check_mode=True,
    )
    p = module.params
    state, sha256 = artifact_state(p["artifact"], p["source_dir"], module.sha256)
    store_ok = mode_is(p["escrow_dir"], 0o700, directory=True)
    hosts = {}
    for host, path in p["host_escrows"].items():
        passphrase = os.path.join(path, "passphrase")
        hosts[host] = {
            "passphrase": os.path.isfile(passphrase),
            "ready": store_ok
            and mode_is(path, 0o700, directory=True)
            and mode_is(passphrase, 0o600, directory=False)
            and mode_is(os.path.join(path, "key.export"), 0o600, directory=False),
        }
    module.exit_json(changed=False, artifact_state=state, artifact_sha256=sha256, hosts=hosts)


if __name__ == "__main__":
    main()
