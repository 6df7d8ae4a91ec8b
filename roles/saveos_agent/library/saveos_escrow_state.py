#!/usr/bin/python
"""The controller's side of a deploy for a whole play in one call: the zipapp and the escrow."""

from __future__ import annotations

# Ansible modules keep their documentation strings above the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: saveos_escrow_state
short_description: Build the agent zipapp and fill the escrow store for a whole play in one call
description:
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)). Builds the agent zipapp
    when it is missing or older than its sources and returns its SHA-256; makes the escrow store
    and each host's directory in it (0700); generates a repository passphrase (0600) for each
    host that has none, marked new (C(passphrase.new)) until the host has installed it, so a
    host that already has a passphrase or a repository refuses it (saveos_agent_state).
  - A passphrase in the store is never replaced, and one that others may read is reported, not
    used.
  - Checks each host's settings against the rules the agent and the API apply (module_utils
    saveos_rules, the same file): its name, its backup and heartbeat intervals, its retention.
  - Works out each host's slots (module_utils saveos_rules host_schedule): its timers'
    OnCalendar lines and its daemon's offsets, from its intervals, backup window and overrides.
  - In check mode it builds, creates and generates nothing and reports what it would.
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
  hosts:
    description: >-
      Inventory host name to that host's C(escrow_dir) (its directory in the store), its
      settings (C(backup_interval_s), C(heartbeat_interval_s), C(retention), empty for the
      agent's default; C(check_interval_s), C(drill_interval_s), C(backup_window_start),
      C(backup_window_minutes), C(backup_on_calendar), C(check_on_calendar),
      C(drill_on_calendar)) and C(problems), what the role found wrong with the host's
      variables. A host with any problem gets no passphrase.
    type: dict
    required: true
  controller_python:
    description: The Python that runs the agent's build.py (default, the module's own).
    type: path
"""

EXAMPLES = r"""
- name: Check the zipapp and the escrow store once for the play
  saveos_escrow_state:
    artifact: dist/saveos-agent.pyz
    source_dir: agent
    escrow_dir: /root/.local/share/saveos/escrow
    controller_python: /usr/bin/python3
    hosts:
      web1: {escrow_dir: /root/.local/share/saveos/escrow/web1, backup_interval_s: 86400}
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
artifact_state:
  description: C(missing), C(outdated) or C(current) (after the build; before it in check mode).
  type: str
  returned: always
artifact_sha256:
  description: SHA-256 of the zipapp, or null when it is missing.
  type: str
  returned: always
hosts:
  description: >-
    Per host C(generated) (its passphrase was generated in this run), C(new) (its passphrase
    is marked new: no host has installed it, so the host was never deployed from this store),
    C(problems) (what is wrong with the host's name or settings, or its escrowed files' modes,
    one sentence each; empty when nothing is), C(schedule) (its slots, saveos_rules
    host_schedule).
  type: dict
  returned: always
"""

import os
import secrets
import stat
import string

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saveos_artifact import ensure_artifact
from ansible.module_utils.saveos_rules import (
    NAME_MAX_LENGTH,
    host_schedule,
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


PASSPHRASE_ALPHABET = string.ascii_letters + string.digits
PASSPHRASE_LENGTH = 64
NEW_MARKER = "passphrase.new"  # the host module refuses a new one where the host has its own


def ensure_private_dir(path: str, check: bool) -> bool:
    """Whether `path` is (or, in check mode, would be) created or its mode fixed to 0700."""
    if mode_is(path, 0o700, directory=True):
        return False
    if not check:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    return True


def generate_passphrase(host_dir: str) -> None:
    """A new passphrase, written once (O_EXCL) before any host sees it, marked new."""
    text = "".join(secrets.choice(PASSPHRASE_ALPHABET) for _ in range(PASSPHRASE_LENGTH)) + "\n"
    fd = os.open(os.path.join(host_dir, "passphrase"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.close(os.open(os.path.join(host_dir, NEW_MARKER), os.O_WRONLY | os.O_CREAT, 0o600))


def escrow_problems(host_dir: str) -> list:
    problems = []
    for name in ("passphrase", "key.export"):
        path = os.path.join(host_dir, name)
        if os.path.exists(path) and not is_private(path):
            problems.append(
                f"{path} is readable by others or not a plain file: chmod 600 it (it is the only"
                " way to open the repository)"
            )
    return problems


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "artifact": {"type": "path", "required": True},
            "source_dir": {"type": "path", "required": True},
            "escrow_dir": {"type": "path", "required": True},
            "controller_python": {"type": "path"},
            "hosts": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    p, check = module.params, module.check_mode
    if not os.path.isabs(p["escrow_dir"]):
        module.fail_json(msg=f"The escrow directory {p['escrow_dir']} is not an absolute path.")
    state, sha256, changes = ensure_artifact(
        module, p["artifact"], p["source_dir"], p["controller_python"]
    )
    if ensure_private_dir(p["escrow_dir"], check):
        changes.append(f"{p['escrow_dir']}: created (0700)")
    hosts = {}
    for host, settings in p["hosts"].items():
        settings = settings or {}
        path = settings.get("escrow_dir") or os.path.join(p["escrow_dir"], host)
        problems = list(settings.get("problems") or []) + setting_problems(host, settings)
        generated = False
        if not problems:
            if ensure_private_dir(path, check):
                changes.append(f"{path}: created (0700)")
            problems = escrow_problems(path)
            if not problems and not os.path.exists(os.path.join(path, "passphrase")):
                generated = True
                changes.append(f"{host}: passphrase generated into the escrow store")
                if not check:
                    generate_passphrase(path)
        new = not problems and not check and os.path.exists(os.path.join(path, NEW_MARKER))
        hosts[host] = {
            "generated": generated and not check, "new": new, "problems": problems,
            "schedule": host_schedule(host, settings),
        }  # fmt: skip
    module.exit_json(
        changed=bool(changes), changes=changes, artifact_state=state, artifact_sha256=sha256,
        hosts=hosts,
    )  # fmt: skip


if __name__ == "__main__":
    main()
