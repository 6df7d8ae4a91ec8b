#!/usr/bin/python
"""Build the agent zipapp on the controller when it is missing or older than its sources."""

from __future__ import annotations

# Ansible modules keep their documentation strings above the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: saveos_artifact
short_description: Build the SaveOS agent zipapp on the controller when it is not current
description:
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)). The zipapp is built
    with the agent's C(build.py) when it is missing, empty, or older than any C(.py) source;
    the same rule as M(saveos_escrow_state) applies (module_utils saveos_artifact).
  - In check mode it builds nothing and reports what it would.
version_added: "0.1.0"
author: SaveOS
options:
  artifact: {type: path, required: true, description: Where the zipapp is (or goes).}
  source_dir: {type: path, required: true, description: The agent sources (with build.py).}
  controller_python: {type: path, description: The Python that runs build.py (default: its own).}
"""

EXAMPLES = r"""
- name: Build the agent zipapp once for the play
  saveos_artifact:
    artifact: dist/saveos-agent.pyz
    source_dir: agent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
artifact_state:
  description: >-
    What the zipapp was: C(missing), C(outdated) or C(current); C(current) once built (check
    mode reports the state found).
  returned: always
  type: str
artifact_sha256:
  description: The zipapp's SHA-256 (null while it is missing).
  returned: always
  type: str
changes:
  description: The build, when there was one (in check mode, when there would be).
  returned: always
  type: list
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saveos_artifact import ensure_artifact


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "artifact": {"type": "path", "required": True},
            "source_dir": {"type": "path", "required": True},
            "controller_python": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    state, sha256, changes = ensure_artifact(
        module, p["artifact"], p["source_dir"], p["controller_python"]
    )
    module.exit_json(
        changed=bool(changes), changes=changes, artifact_state=state, artifact_sha256=sha256
    )


if __name__ == "__main__":
    main()
