#!/usr/bin/python
"""Probe a host's whole SaveOS agent state in one round trip (the role's warm path).

Longer than most modules on purpose: an Ansible module is one file (its documentation strings
included), and the probe is worth its one round trip only if it checks everything.
"""

from __future__ import annotations

# Ansible modules keep their documentation strings above the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: saveos_agent_state
short_description: Check in one round trip that a host's SaveOS agent is fully deployed
description:
  - Compares everything the saveos_agent role installs with what the controller would install
    (directories, files and their owners and modes, the agent zipapp by SHA-256, the agent token
    against the API, the repository passphrase and that it opens the Borg repository, the Borg
    version, the schedule). It only reads: the token is checked with a GET of
    C(/api/v1/agents/me), never with a heartbeat (which would hand the host its queued jobs).
  - Also returns the facts the role uses (the C(distribution), C(service_mgr) and C(python)
    subsets of M(ansible.builtin.setup)), so the play needs no separate fact gathering.
  - Changes nothing the role manages, so it always reports C(changed=false) and behaves the same
    in check mode. When
    anything differs it returns C(settled=false) and the reasons; the role then runs its
    task-by-task path, which converges and reports the changes.
  - Opening the repository with Borg is the slow part of the check. After Borg has opened it, the
    module keeps an HMAC of the repository's C(config) file keyed with the passphrase in
    O(open_proof) (0600); while neither the passphrase nor that file (which holds the repokey)
    changes, Borg is not asked again. Keyfile encryption and remote repositories always ask Borg.
  - Never returns a secret. The passphrase argument is marked no_log.
version_added: "0.1.0"
author: SaveOS
options:
  directories:
    description: Directories that must exist, owned by root:root, with the given mode.
    type: list
    elements: dict
    default: []
  files:
    description: >-
      Files that must exist, owned by root:root, with the given mode and either exactly the given
      C(content) or the given C(sha256).
    type: list
    elements: dict
    default: []
  config_file:
    description: Path of the agent configuration (JSON).
    type: path
    required: true
  config:
    description: >-
      The agent configuration without its agent id; the id of the token's agent is added before
      the comparison. Compared with the file written as pretty JSON (2 spaces, sorted keys).
    type: dict
    required: true
  token_file:
    description: Path of the agent token; it must exist (root:root 0600) and be accepted by the API.
    type: path
    required: true
  api_url:
    description: The API URL as the host reaches it.
    type: str
    required: true
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: The fleet's CA on the host; the API's certificate must chain to it (only).
    type: path
  ca_file:
    description: Like an element of O(files), for that CA file (checked when given).
    type: dict
  follow_redirects:
    description: Never follow a redirect (it would resend the agent token elsewhere).
    type: str
    default: none
    choices: [none]
  passphrase_file:
    description: Path of the repository passphrase on the host.
    type: path
    required: true
  passphrase:
    description: The escrowed passphrase (exact file content); unset when the escrow has none.
    type: str
  repository:
    description: The Borg repository.
    type: str
    required: true
  repository_is_local:
    description: Whether the repository is a local path (its C(config) file must exist).
    type: bool
    default: true
  borg_env:
    description: Environment for Borg (BORG_PASSCOMMAND reads the passphrase file).
    type: dict
    default: {}
  borg_min_version:
    description: The oldest acceptable Borg version.
    type: str
    default: "1.2"
  encryption:
    description: The repository's Borg encryption mode (only repokey modes use O(open_proof)).
    type: str
    default: repokey-blake2
  open_proof:
    description: Where to keep the proof that Borg opened the repository with the passphrase.
    type: path
  scheduler:
    description: C(systemd), C(supervisor), or C(auto) (systemd when the host runs it).
    type: str
    choices: [auto, systemd, supervisor]
    required: true
  systemd_files:
    description: Like O(files), checked only when the effective scheduler is systemd.
    type: list
    elements: dict
    default: []
  supervisor_files:
    description: Like O(files), checked only when the effective scheduler is the supervisor.
    type: list
    elements: dict
    default: []
  systemd_timers:
    description: Timers that must be enabled and active when the scheduler is systemd.
    type: list
    elements: str
    default: []
  supervise:
    description: >-
      The supervisor script; its C(status) must print C(alive) under the supervisor scheduler.
    type: path
"""

EXAMPLES = r"""
- name: Check the whole agent state in one round trip
  saveos_agent_state:
    config_file: /etc/saveos/agent.json
    config: "{{ saveos_agent_config_data }}"
    token_file: /etc/saveos/token
    api_url: https://saveos.example.com
    passphrase_file: /etc/saveos/passphrase
    passphrase: "{{ lookup('ansible.builtin.file', escrow_file, rstrip=false) }}"
    repository: /var/lib/saveos/repo
    scheduler: auto
    systemd_timers: [saveos-agent-heartbeat.timer, saveos-agent-backup.timer]
  no_log: true
  register: saveos_agent_state
"""

RETURN = r"""
settled:
  description: Everything is in place, the agent token included.
  type: bool
  returned: always
drift:
  description: Why the host is not settled, one short reason each (no secrets).
  type: list
  elements: str
  returned: always
agent_id:
  description: The id of the agent the token belongs to (0 when unknown).
  type: int
  returned: always
scheduler:
  description: The effective scheduler.
  type: str
  returned: always
ansible_facts:
  description: The distribution, service_mgr and python facts, as setup gathers them.
  type: dict
  returned: always
borg_version:
  description: The Borg version found on the host, or null.
  type: str
  returned: always
"""

import contextlib
import grp
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.facts import ansible_collector
from ansible.module_utils.facts.namespace import PrefixFactNamespace
from ansible.module_utils.facts.system.distribution import DistributionFactCollector
from ansible.module_utils.facts.system.platform import PlatformFactCollector
from ansible.module_utils.facts.system.python import PythonFactCollector
from ansible.module_utils.facts.system.service_mgr import ServiceMgrFactCollector
from ansible.module_utils.urls import fetch_url


def _owner_mode(path: str, st: os.stat_result, want_mode: str) -> list[str]:
    problems = []
    try:
        owner, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        owner = group = "?"
    if (owner, group) != ("root", "root"):
        problems.append(f"{path}: owner {owner}:{group}")
    if stat.S_IMODE(st.st_mode) != int(want_mode, 8):
        problems.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o}, want {want_mode}")
    return problems


def _lstat_as(path: str, is_kind, kind: str) -> tuple[os.stat_result | None, list[str]]:
    """(stat, []) when `path` is there and of the kind `is_kind` tests; else (None, problem)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, [f"{path}: missing"]
    if not is_kind(st.st_mode):
        return None, [f"{path}: not {kind}"]
    return st, []


def check_directory(spec: dict) -> list[str]:
    path = spec["path"]
    st, problems = _lstat_as(path, stat.S_ISDIR, "a directory")
    return problems if st is None else _owner_mode(path, st, spec["mode"])


def check_file(spec: dict, sha256=None) -> list[str]:
    """Compare one file; a secret's content is compared, never reported. `sha256` is
    AnsibleModule.sha256, needed only for specs that give a checksum."""
    path = spec["path"]
    st, problems = _lstat_as(path, stat.S_ISREG, "a regular file")
    if st is None:
        return problems
    problems = _owner_mode(path, st, spec["mode"])
    if spec.get("content") is not None:
        with open(path, "rb") as fh:
            if fh.read() != spec["content"].encode():
                problems.append(f"{path}: content differs")
    elif spec.get("sha256") and sha256(path) != spec["sha256"]:
        problems.append(f"{path}: checksum differs")
    return problems


def run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False
    )


def borg_version() -> str | None:
    """The installed Borg's version. A Python entry script is asked through its own interpreter
    (`import borg`, about 30 ms) instead of `borg --version`, which loads all of Borg."""
    borg = shutil.which("borg")
    if not borg:
        return None
    try:
        with open(borg, "rb") as fh:
            shebang = fh.readline().decode(errors="replace").strip()
    except OSError:
        shebang = ""
    found = None
    if shebang.startswith("#!") and "python" in shebang:
        parts = shebang[2:].split()
        probe = run([*parts, "-c", "import borg; print(borg.__version__)"])
        if probe.returncode == 0:
            found = probe.stdout.strip()
    if not found:
        probe = run([borg, "--version"])
        if probe.returncode != 0:
            return None
        found = probe.stdout.strip()
    match = re.search(r"[0-9]+\.[0-9]+(\.[0-9]+)?", found)
    return match.group(0) if match else None


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"[0-9]+", text)[:3])


def token_agent_id(module: AnsibleModule, token_file: str, api_url: str) -> tuple[int, str | None]:
    """(agent id, problem): asks the API who the token belongs to, as the agent would."""
    try:
        with open(token_file, encoding="utf-8") as fh:
            token = fh.read().strip()
    except FileNotFoundError:
        return 0, f"{token_file}: missing"
    module.no_log_values.add(token)
    response, info = fetch_url(
        module,
        api_url.rstrip("/") + "/api/v1/agents/me",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=15,
        ca_path=module.params["ca_path"],
    )
    if info.get("status") != 200 or response is None:
        return 0, f"the API answered {info.get('status')} for the agent token"
    try:
        return int(json.loads(response.read())["id"]), None
    except (ValueError, KeyError, TypeError):
        return 0, "the API's answer for the agent token has no id"


def gather_facts(module: AnsibleModule) -> dict:
    """What `setup` with gather_subset [!all, !min, distribution, service_mgr, python] returns."""
    collector = ansible_collector.get_ansible_collector(
        all_collector_classes=[
            PlatformFactCollector,
            DistributionFactCollector,
            ServiceMgrFactCollector,
            PythonFactCollector,
        ],
        namespace=PrefixFactNamespace(namespace_name="ansible", prefix="ansible_"),
        filter_spec=[],
        gather_subset=["!all", "!min", "distribution", "service_mgr", "python"],
        gather_timeout=10,
        minimal_gather_subset=frozenset(),
    )
    return collector.collect(module=module)


def open_digest(passphrase: str, repository: str) -> str | None:
    try:
        with open(os.path.join(repository, "config"), "rb") as fh:
            config = fh.read()
    except OSError:
        return None
    return hmac.new(passphrase.encode(), config, hashlib.sha256).hexdigest()


def repository_opens(module: AnsibleModule, version_ok: bool) -> bool:
    """Whether Borg opens the repository with the passphrase file (see open_proof)."""
    p = module.params
    cacheable = (
        p["open_proof"] and p["repository_is_local"] and p["encryption"].startswith("repokey")
    )
    digest = open_digest(p["passphrase"], p["repository"]) if cacheable else None
    if digest:
        try:
            with open(p["open_proof"], encoding="ascii") as fh:
                if hmac.compare_digest(fh.read().strip(), digest):
                    return True
        except OSError:
            pass
    if not version_ok:
        return False
    env = dict(os.environ, **{k: str(v) for k, v in p["borg_env"].items()})
    if run(["borg", "info", "--json", p["repository"]], env=env).returncode != 0:
        return False
    if digest and not module.check_mode:
        with contextlib.suppress(OSError):
            fd = os.open(p["open_proof"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(digest + "\n")
    return True


def config_agent_id(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as fh:
            return int(json.load(fh).get("agent_id") or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def config_text(config: dict, agent_id: int) -> str:
    """What the role's agent.json.j2 template writes (to_nice_json(indent=2) plus a newline)."""
    data = dict(config, agent_id=agent_id)
    return json.dumps(data, indent=2, sort_keys=True, separators=(",", ": ")) + "\n"


def check_schedule(params: dict, scheduler: str) -> list[str]:
    if scheduler == "systemd":
        problems = []
        for timer in params["systemd_timers"]:
            for verb, want in (("is-enabled", "enabled"), ("is-active", "active")):
                result = run(["systemctl", verb, timer])
                if result.stdout.strip() != want:
                    problems.append(f"{timer}: {result.stdout.strip() or 'unknown'}, want {want}")
        return problems
    supervise = params["supervise"]
    if not supervise or not os.access(supervise, os.X_OK):
        return [f"{supervise}: missing"]
    status = run([supervise, "status"]).stdout.strip()
    return [] if status == "alive" else [f"the agent daemon is {status or 'unknown'}"]


def probe(module: AnsibleModule) -> dict:
    p = module.params
    facts = gather_facts(module)
    scheduler = p["scheduler"]
    if scheduler == "auto":
        scheduler = "systemd" if facts.get("ansible_service_mgr") == "systemd" else "supervisor"

    drift: list[str] = []
    for spec in p["directories"]:
        drift += check_directory(spec)
    files = p["files"] + p["systemd_files" if scheduler == "systemd" else "supervisor_files"]
    if p["ca_file"]:
        files = [*files, p["ca_file"]]
    for spec in files:
        drift += check_file(spec, module.sha256)
    drift += check_file({"path": p["token_file"], "mode": "0600"})
    agent_id = config_agent_id(p["config_file"])
    if not agent_id:
        drift.append(f"{p['config_file']}: missing or without an agent id")
    else:
        text = config_text(p["config"], agent_id)
        drift += check_file({"path": p["config_file"], "mode": "0600", "content": text})

    version = borg_version()
    version_ok = False
    if version is None:
        drift.append("borg: not installed")
    elif version_tuple(version) < version_tuple(p["borg_min_version"]):
        drift.append(f"borg {version} is older than {p['borg_min_version']}")
    else:
        version_ok = True

    if p["passphrase"] is None:
        drift.append("the escrow store has no passphrase for this host")
    else:
        drift += check_file(
            {"path": p["passphrase_file"], "mode": "0600", "content": p["passphrase"]}
        )
        if p["repository_is_local"] and not os.path.exists(os.path.join(p["repository"], "config")):
            drift.append(f"{p['repository']}: no repository")
        elif not drift and not repository_opens(module, version_ok):
            drift.append(f"{p['repository']}: does not open with the escrowed passphrase")

    if not drift:
        drift += check_schedule(p, scheduler)

    if not drift:
        token_id, problem = token_agent_id(module, p["token_file"], p["api_url"])
        if problem:
            drift.append(problem)
        elif token_id != agent_id:
            drift.append(f"the token belongs to agent {token_id}, the config names {agent_id}")
    return {
        "changed": False,
        "settled": not drift,
        "drift": drift,
        "agent_id": agent_id,
        "borg_version": version,
        "scheduler": scheduler,
        "ansible_facts": facts,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "config_file": {"type": "path", "required": True},
            "config": {"type": "dict", "required": True},
            "token_file": {"type": "path", "required": True},
            "api_url": {"type": "str", "required": True},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "ca_file": {"type": "dict"},
            # fetch_url reads it: a redirect would resend the agent token elsewhere.
            "follow_redirects": {"type": "str", "default": "none", "choices": ["none"]},
            "passphrase_file": {"type": "path", "required": True},
            "passphrase": {"type": "str", "no_log": True},
            "repository": {"type": "str", "required": True},
            "repository_is_local": {"type": "bool", "default": True},
            "borg_env": {"type": "dict", "default": {}},
            "borg_min_version": {"type": "str", "default": "1.2"},
            "encryption": {"type": "str", "default": "repokey-blake2"},
            "open_proof": {"type": "path"},
            "scheduler": {
                "type": "str",
                "required": True,
                "choices": ["auto", "systemd", "supervisor"],
            },
            "systemd_files": {"type": "list", "elements": "dict", "default": []},
            "supervisor_files": {"type": "list", "elements": "dict", "default": []},
            "systemd_timers": {"type": "list", "elements": "str", "default": []},
            "supervise": {"type": "path"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**probe(module))


if __name__ == "__main__":
    main()
