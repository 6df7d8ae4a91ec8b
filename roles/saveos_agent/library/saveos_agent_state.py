#!/usr/bin/python
"""Converge a host's whole SaveOS agent in one round trip (the role's cold and warm path).

Over 400 lines on purpose: about 250 of them are the module's documentation strings, which
Ansible wants in the module file; the converge itself is one idea (the host, item by item, in the
order the agent needs them). Its helpers live in the role's module_utils/ (saveos_host_files:
the file converger; saveos_host_probes: what it asks of the host and the API).
"""

from __future__ import annotations

# Ansible modules keep their documentation strings above the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: saveos_agent_state
short_description: Converge (or, in check mode, compare) a host's SaveOS agent in one round trip
description:
  - Makes the host what the saveos_agent role installs, item by item, and reports each item it
    changed (in check mode: would change) in C(changes), with C(--diff) output for the items
    that hold no secret: directories, files and their owners and modes, the agent zipapp (by
    SHA-256), the wrapper, the fleet's CA, the systemd units or the supervisor script, the agent
    configuration, the agent token, the repository passphrase; then the Borg repository (C(borg
    init) and the key export, through the agent, which hands Borg the passphrase on a pipe:
    never in argv or the environment; a local repokey repository's key is read from the config
    Borg made or opened, as C(borg key export) writes it) and the schedule (daemon-reload,
    timers enabled and started, or the supervised daemon restarted after a change and kept
    alive).
  - The agent token is checked with a GET of C(/api/v1/agents/me), never with a heartbeat (which
    would hand the host its queued jobs). After a change the module sends one heartbeat, the
    check that the agent reaches the API.
  - What this call cannot finish is returned in C(needs), and the role does it before calling the
    module once more (with O(final)): C(zipapp) (the zipapp's bytes, sent only then), C(token)
    (the agent provisioned from the controller, one API call for the batch), C(borg) (install
    the package), C(repository_server) (register the host's key on its repository server). The
    schedule starts only in the call that needs nothing. Check mode changes nothing.
  - A host that already has a passphrase or a repository is refused a passphrase the escrow
    store has just generated (O(passphrase_new)): the module fails with C(refused_passphrase)
    before it changes anything, and the role takes the new passphrase back.
  - Opening the repository with Borg is the slow part of a warm run. After Borg has opened it,
    the module keeps an HMAC of the repository's C(config) file keyed with the passphrase in
    O(open_proof) (0600); while neither changes, Borg is not asked again. Keyfile encryption
    and remote repositories always ask Borg.
  - Also returns the facts the role uses (the C(distribution), C(service_mgr) and C(python)
    subsets of M(ansible.builtin.setup)), and refuses an unsupported system before any change
    (Debian family only; tested: Debian 12).
  - Its action plugin (same name) reads the escrowed passphrase, sends the zipapp only when the
    host's differs, and writes the exported key into the escrow store: no secret is returned.
version_added: "0.1.0"
author: SaveOS
options:
  directories:
    description: Directories that must exist, owned by root:root, with the given mode.
    type: list
    elements: dict
    default: []
  files:
    description: Files owned by root:root with the given mode and exactly the given C(content).
    type: list
    elements: dict
    default: []
  zipapp:
    description: The agent zipapp, C(path), C(mode) and C(sha256).
    type: dict
    required: true
  zipapp_b64:
    description: >-
      The zipapp's bytes (base64): the action plugin sends them only in the second call to a
      host whose copy differs (the first call needs C(zipapp)).
    type: str
  config_file:
    description: Path of the agent configuration (JSON).
    type: path
    required: true
  config:
    description: >-
      The agent configuration without its agent id, written as pretty JSON (2 spaces, sorted
      keys) with the agent id added.
    type: dict
    required: true
  agent_id:
    description: The host's agent id as the API provisioned it (0 when unknown).
    type: int
    default: 0
  token_file:
    description: Path of the agent token (root:root 0600).
    type: path
    required: true
  token:
    description: A new agent token to install (provisioned from the controller for this run).
    type: str
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
    description: Like an element of O(files), for that CA file (installed when given).
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
  passphrase_new:
    description: The escrow store generated the passphrase in this run and no host has used it.
    type: bool
    default: false
  repository:
    description: The Borg repository.
    type: str
    required: true
  repository_mode:
    description: C(local) (a path on the host), C(server) (a SaveOS repository server), C(remote).
    type: str
    choices: [local, server, remote]
    default: local
  repository_server_files:
    description: What a repository-server repository needs first (the host's key, the pinned key).
    type: list
    elements: path
    default: []
  repository_server_pin:
    description: >-
      The repository server's host key line for the host's known_hosts (C(path), C(mode),
      C(content)), when the server registered the host's key in this run (a new host).
    type: dict
  borg_env:
    description: Environment for Borg (BORG_PASSCOMMAND reads the passphrase file).
    type: dict
    default: {}
  borg_min_version:
    description: The oldest acceptable Borg version.
    type: str
    default: "1.2"
  borg_version_cache:
    description: >-
      Where to keep the Borg version found and the files it was read from (while they are
      unchanged, Borg is not asked again): the agent's own cache (saveos_rules.borg_version),
      so its first heartbeats do not ask Borg either.
    type: path
  facts_cache:
    description: >-
      Where to keep the facts gathered and what they were read from (the release files, PID 1,
      the interpreter): while that is unchanged, the facts are not gathered again.
    type: path
  borg_package:
    description: The package that provides Borg (named in the message for a Borg too old).
    type: str
    default: borgbackup
  encryption:
    description: The repository's Borg encryption mode (only repokey modes use O(open_proof)).
    type: str
    default: repokey-blake2
  open_proof:
    description: Where to keep the proof that Borg opened the repository with the passphrase.
    type: path
  key_escrowed:
    description: The escrow store already holds this repository's exported key.
    type: bool
    default: true
  wrapper:
    description: The saveos-agent wrapper (runs init, key-export and the heartbeat).
    type: path
    required: true
  scheduler:
    description: C(systemd), C(supervisor), or C(auto) (systemd when the host runs it).
    type: str
    choices: [auto, systemd, supervisor]
    required: true
  systemd_problem:
    description: Why the schedule cannot be systemd timers (empty when it can).
    type: str
    default: ""
  systemd_files:
    description: Like O(files), installed only when the effective scheduler is systemd.
    type: list
    elements: dict
    default: []
  supervisor_files:
    description: Like O(files), installed only when the effective scheduler is the supervisor.
    type: list
    elements: dict
    default: []
  systemd_timers:
    description: Timers enabled and started when the scheduler is systemd.
    type: list
    elements: str
    default: []
  supervise:
    description: The supervisor script (C(status), C(ensure), C(stop)).
    type: path
  os_families:
    description: The supported OS families (a release other than Debian 12 is warned about).
    type: list
    elements: str
    default: [Debian]
  restart:
    description: The first call changed what the schedule reads (reload or restart it now).
    type: bool
    default: false
  host:
    description: The host's inventory name, for messages.
    type: str
    default: the host
  role_warnings:
    description: What the role warns about for this host (shown as the module's warnings).
    type: list
    elements: str
    default: []
  final:
    description: >-
      The second call, after the role did what C(needs) asked; whatever is still needed fails.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Converge the whole agent in one round trip
  saveos_agent_state:
    zipapp: {path: /opt/saveos/saveos-agent.pyz, mode: "0644", sha256: "{{ sha }}"}
    config_file: /etc/saveos/agent.json
    config: "{{ saveos_agent_config_data }}"
    token_file: /etc/saveos/token
    api_url: https://saveos.example.com
    passphrase_file: /etc/saveos/passphrase
    repository: /var/lib/saveos/repo
    wrapper: /usr/local/bin/saveos-agent
    scheduler: auto
    systemd_timers: [saveos-agent-heartbeat.timer, saveos-agent-backup.timer]
  register: _saveos_agent_state
"""

RETURN = r"""
changes:
  description: What was changed (in check mode, what would be), one short item each, no secrets.
  type: list
  elements: str
  returned: always
needs:
  description: What the role must do task by task first (borg, token, repository_server).
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

import base64
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saveos_host_files import Host
from ansible.module_utils.saveos_host_probes import (
    borg_error,
    config_agent_id,
    config_text,
    gather_facts,
    record_open,
    repokey_export,
    repository_opens,
    run,
    token_agent_id,
    version_tuple,
)
from ansible.module_utils.saveos_rules import keep_entry, probe_borg_version


class Converge:
    """One converge of the host, in the order the agent needs its pieces."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.p = module.params
        self.host = Host(module)
        self.needs: list[str] = []

    def need(self, what: str, message: str) -> None:
        if self.p["final"]:
            self.host.fail(message)
        self.needs.append(what)

    def run(self) -> dict:
        p, host = self.p, self.host
        for warning in p["role_warnings"]:
            self.module.warn(warning)
        facts, facts_entry = gather_facts(self.module, p["facts_cache"])
        self.refuse_unsupported(facts)
        scheduler = p["scheduler"]
        if scheduler == "auto":
            scheduler = "systemd" if facts.get("ansible_service_mgr") == "systemd" else "supervisor"
        if scheduler == "systemd" and p["systemd_problem"]:
            host.fail(p["systemd_problem"])
        self.refuse_new_passphrase()

        version, version_entry = probe_borg_version("borg", p["borg_version_cache"])
        borg_ok = False
        if version is None:
            self.need("borg", "Borg is not installed (the package install did not provide it)")
        elif version_tuple(version) < version_tuple(p["borg_min_version"]):
            host.fail(
                f"SaveOS needs Borg >= {p['borg_min_version']}; found {version}. Install a newer"
                f" {p['borg_package']} (e.g. from backports)."
            )
        else:
            borg_ok = True

        for spec in p["directories"]:
            host.ensure_directory(spec["path"], spec["mode"])
        if not host.check:  # a cold host's probes too, now that their directory is there
            keep_entry(p["facts_cache"], facts_entry)
            keep_entry(p["borg_version_cache"], version_entry)
        # Whether anything the schedule reads changed (a reload, or the daemon's restart).
        restart = p["restart"]
        restart |= self.converge_zipapp()
        files = p["files"] + p["systemd_files" if scheduler == "systemd" else "supervisor_files"]
        if p["ca_file"]:
            files = [*files, p["ca_file"]]
        for spec in files:
            restart |= host.ensure_file(spec["path"], spec["mode"], spec["content"].encode())

        agent_id = self.converge_token()
        restart |= self.token_written
        if agent_id:
            text = config_text(p["config"], agent_id).encode()
            restart |= host.ensure_file(p["config_file"], "0600", text)
        else:
            host.changed(f"{p['config_file']}: written with the provisioned agent id")

        if p["passphrase"] is None:
            # Only in check mode: the escrow store generates a missing passphrase otherwise.
            host.changed(f"{p['passphrase_file']}: generated into the escrow store and installed")
        else:
            restart |= host.ensure_file(
                p["passphrase_file"], "0600", p["passphrase"].encode(), secret=True
            )
        pin = p["repository_server_pin"]
        if pin:  # the server registered the host's key in this run: its host key, pinned
            line = pin["content"].rstrip("\n") + "\n"
            host.ensure_file(pin["path"], pin["mode"], line.encode())
        if borg_ok and p["passphrase"] is not None:
            self.converge_repository()

        # The server's side of a repository-server host (its key's forced command, the quota in
        # agent.json) is registered task by task: after any change, once more (but for a new
        # host whose key the batch's call registered, which this call's pin says).
        if (
            p["repository_mode"] == "server"
            and host.changes
            and not (host.check or p["final"] or pin or "repository_server" in self.needs)
        ):
            self.needs.append("repository_server")
        # The schedule starts the agent: only once every piece is in place.
        if not self.needs:
            # The heartbeat that proves the agent reaches the API needs the config and the token,
            # not the schedule: when a change already asks for it, it runs while the schedule
            # starts (the supervisor waits over a second to see its daemon stay up).
            beat = None
            if (host.changes or p["restart"]) and not host.check:
                beat = self.agent_start("heartbeat")
            if scheduler == "systemd":
                self.converge_timers(restart)
            else:
                self.converge_supervisor(restart)
            if (host.changes or p["restart"]) and not host.check:
                self.verify(beat or self.agent_start("heartbeat"))
        result = {
            "changed": bool(host.changes),
            "changes": host.changes,
            "needs": self.needs,
            "restart": restart and bool(self.needs),
            "agent_id": agent_id,
            "borg_version": version,
            "scheduler": scheduler,
            "ansible_facts": facts,
            "passphrase_in_use": p["passphrase"] is not None and not host.check,
        }
        if self.key_export is not None:
            result["key_export"] = self.key_export
        if host.diffs:
            result["diff"] = host.diffs
        return result

    def converge_zipapp(self) -> bool:
        """The zipapp's bytes cross the network only for a host whose copy differs: a first
        call finds that out (and needs `zipapp`), the second carries them."""
        p, host = self.p, self.host
        zipapp = p["zipapp"]
        if p["zipapp_b64"] is not None:
            data = base64.b64decode(p["zipapp_b64"])
            return host.ensure_file(zipapp["path"], zipapp["mode"], data, zipapp["sha256"])
        if not zipapp["sha256"]:  # not built yet, which only check mode leaves so
            if not host.check:
                host.fail(f"{zipapp['path']}: the controller gave no digest of the built zipapp")
            host.changed(f"{zipapp['path']}: built on the controller and installed")
            return False
        if not self.zipapp_differs(zipapp):
            return host.ensure_file(zipapp["path"], zipapp["mode"], None, zipapp["sha256"])
        if host.check:
            host.changed(f"{zipapp['path']}: content differs")
        else:
            self.need("zipapp", f"{zipapp['path']}: differs and the controller sent no zipapp")
        return False

    def refuse_unsupported(self, facts: dict) -> None:
        """Honest platforms: only a family a lab host of which runs the suite (Debian; tested:
        Debian 12, with and without systemd). The rest is refused before anything changes."""
        p, name = self.p, self.p["host"]
        family = facts.get("ansible_os_family")
        distribution = facts.get("ansible_distribution") or "an unknown system"
        release = facts.get("ansible_distribution_version") or ""
        if family not in p["os_families"]:
            self.host.fail(
                f"{name} runs {distribution} {release} ({family or 'unknown'} family): SaveOS"
                " supports Debian-family hosts only (tested: Debian 12). RHEL-family and other"
                " hosts are not supported (no lab host of theirs runs the test suite); nothing"
                f" was changed on {name}."
            )
        if (distribution, facts.get("ansible_distribution_major_version")) != ("Debian", "12"):
            self.module.warn(
                f"{name} runs {distribution} {release}: Debian-family but untested (SaveOS is"
                " tested on Debian 12)."
            )
        version = (facts.get("ansible_python") or {}).get("version") or {}
        if (version.get("major"), version.get("minor") or 0) < (3, 9):
            self.host.fail(
                f"The agent needs Python >= 3.9 on the host; {name} has"
                f" {version.get('major')}.{version.get('minor')}."
            )

    def zipapp_differs(self, zipapp: dict) -> bool:
        try:
            return self.module.sha256(zipapp["path"]) != zipapp["sha256"]
        except (OSError, TypeError):
            return True

    def refuse_new_passphrase(self) -> None:
        """An empty escrow store (a new controller, a wrong SAVEOS_ESCROW_DIR) must never lead
        to a new passphrase over the one the host's repository was made with."""
        p = self.p
        if not (p["passphrase_new"] or p["passphrase"] is None):
            return
        try:
            with open(p["passphrase_file"], encoding="utf-8") as fh:
                on_host = fh.read()
        except FileNotFoundError:
            on_host = None
        if on_host is not None and on_host == p["passphrase"]:
            return  # installed by an earlier run that stopped before the escrow heard of it
        found = None
        if on_host is not None:
            found = "a repository passphrase"
        elif p["repository_mode"] == "local" and os.path.exists(
            os.path.join(p["repository"], "config")
        ):
            found = "a repository"
        if found:
            self.host.fail(
                f"{p['host']} already has {found}, but the escrow store has no passphrase for it."
                " SaveOS will not generate a new one over it: point SAVEOS_ESCROW_DIR"
                " (saveos_agent_escrow_dir) at the escrow store you backed up, or copy the host's"
                f" {p['passphrase_file']} there (mode 0600), then deploy again.",
                refused_passphrase=True,
                found=found,
            )

    token_written = False
    key_export = None

    def converge_token(self) -> int:
        """The host's agent id (0 while unknown); a token the host lacks or the API refuses is
        needed from the controller."""
        p, host = self.p, self.host
        if p["token"]:
            self.token_written = host.ensure_file(
                p["token_file"], "0600", (p["token"] + "\n").encode(), secret=True
            )
            return p["agent_id"]
        try:
            with open(p["token_file"], encoding="utf-8") as fh:
                token = fh.read().strip()
        except FileNotFoundError:
            token = ""
        # A token replaced keeps its agent: the config keeps the id it names until the
        # provisioning answer (the second call) says which agent the host is.
        known = p["agent_id"] or config_agent_id(p["config_file"])
        if not token:
            host.changed(f"{p['token_file']}: provisioned")
            if not host.check:
                self.need("token", f"{p['token_file']}: missing, and the API issued no token")
            return known
        self.module.no_log_values.add(token)
        host.owner_mode(p["token_file"], os.lstat(p["token_file"]), 0o600)
        token_id, status = token_agent_id(self.module, token)
        if status not in (200, 401, 403):
            host.fail(
                f"{p['host']} cannot reach the SaveOS API at {p['api_url']} (HTTP status"
                f" {status if status and status > 0 else 'none'}). Check saveos_agent_api_url /"
                " SAVEOS_API_URL and that the API is running."
            )
        want = known or token_id
        if token_id is None or token_id != want:
            why = "refused" if token_id is None else f"of agent {token_id}, not {want},"
            host.changed(f"{p['token_file']}: {why} by the API, rotated")
            if not host.check:
                self.need("token", f"{p['token_file']}: {why} by the API")
        return want or 0

    def converge_repository(self) -> None:
        """`borg init` when there is no repository, the proof that the escrowed passphrase opens
        it, and the key export for the escrow store. Borg reads the passphrase from its 0600
        file (BORG_PASSCOMMAND in borg_env names the file): never argv, never an environment
        value."""
        p, host = self.p, self.host
        if p["repository_mode"] == "server" and not all(
            os.path.exists(f) for f in p["repository_server_files"]
        ):
            host.changed("the repository server: the host's key registered")
            if not host.check:
                self.need(
                    "repository_server", "the host's key for its repository server is missing"
                )
            return
        local = p["repository_mode"] == "local"
        if local:
            missing = not os.path.exists(os.path.join(p["repository"], "config"))
        else:
            missing = not repository_opens(self.module)
        if missing:
            if host.check:
                host.changed(f"{p['repository']}: initialised ({p['encryption']})")
                return
            argv = ["borg", "init", "--log-json", "--encryption", p["encryption"]]
            created = self.borg(
                [*argv, *(["--make-parent-dirs"] if local else []), p["repository"]]
            )
            if created.returncode == 0:
                host.changed(f"{p['repository']}: initialised ({p['encryption']})")
                # Borg made it with the passphrase it read from the file just written: that
                # proves it opens, without a `borg info` (which builds Borg's cache: seconds).
                record_open(self.module)
                return self.escrow_key()
            elif "Repository.AlreadyExists" not in created.stderr:
                if p["repository_mode"] == "server" and not p["final"]:
                    self.needs.append("repository_server")  # registered again, then retried
                    return
                host.fail(
                    f"borg init of {p['repository']} failed (exit {created.returncode}):"
                    f" {borg_error(created)}"
                )
        if (local or missing) and not repository_opens(self.module):
            host.fail(
                f"{p['repository']} on {p['host']} does not open with the escrowed passphrase"
                f" ({p['passphrase_file']})"
            )
        self.escrow_key()

    def escrow_key(self) -> None:
        p, host = self.p, self.host
        if not p["key_escrowed"]:
            host.changed(f"{p['repository']}: key exported into the escrow store")
            if not host.check:
                self.key_export = self.export_key()

    def export_key(self) -> str:
        text = repokey_export(self.p)
        if text is not None:
            return text
        workdir = tempfile.mkdtemp(prefix="saveos-key-")  # 0700
        try:
            out = os.path.join(workdir, "key.export")
            exported = self.borg(["borg", "key", "export", "--log-json", self.p["repository"], out])
            if exported.returncode != 0:
                self.host.fail(f"borg key export failed: {borg_error(exported)}")
            with open(out, encoding="utf-8") as fh:
                text = fh.read()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        # Returned to the action plugin, which writes it into the escrow store and drops it.
        return text

    def borg(self, argv: list[str]) -> subprocess.CompletedProcess:
        env = dict(os.environ, **{k: str(v) for k, v in self.p["borg_env"].items()})
        return run(argv, env=env)

    def agent_start(self, *argv: str) -> subprocess.Popen:
        return subprocess.Popen(
            [self.p["wrapper"], "--json", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def converge_timers(self, units_changed: bool) -> None:
        host = self.host
        if units_changed and not host.check:
            reload = run(["systemctl", "daemon-reload"])
            if reload.returncode != 0:
                host.fail(f"systemctl daemon-reload failed: {reload.stderr.strip()[:300]}")
        for timer in self.p["systemd_timers"]:
            for verb, want, action, done_word in (
                ("is-enabled", "enabled", "enable", "enabled"),
                ("is-active", "active", "start", "started"),
            ):
                state = run(["systemctl", verb, timer]).stdout.strip()
                if state == want:
                    continue
                host.changed(f"{timer}: {state or 'unknown'}, {done_word}")
                if not host.check:
                    done = run(["systemctl", action, timer])
                    if done.returncode != 0:
                        host.fail(f"systemctl {action} {timer} failed: {done.stderr.strip()[:300]}")

    def converge_supervisor(self, restart: bool) -> None:
        host, supervise = self.host, self.p["supervise"]
        if not supervise or not os.access(supervise, os.X_OK):
            host.changed("the agent daemon: started")
            return
        status = run([supervise, "status"]).stdout.strip()
        if status == "alive" and not restart:
            return
        host.changed(
            "the agent daemon: restarted"
            if status == "alive"
            else f"the agent daemon is {status or 'unknown'}: started"
        )
        if host.check:
            return
        if status == "alive":
            run([supervise, "stop"])
        started = run([supervise, "ensure"])
        if started.returncode != 0:
            host.fail(f"the agent daemon did not start: {started.stderr.strip()[:300]}")

    def verify(self, beat: subprocess.Popen) -> None:
        stdout, stderr = beat.communicate()
        if beat.returncode != 0:
            self.host.fail(
                f"the agent could not send a heartbeat to {self.p['api_url']} (exit"
                f" {beat.returncode}): {(stdout + ' ' + stderr).strip()[:600]}"
            )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "zipapp": {"type": "dict", "required": True},
            # Not a secret, but far too long to be echoed back in the invocation.
            "zipapp_b64": {"type": "str", "no_log": True},
            "config_file": {"type": "path", "required": True},
            "config": {"type": "dict", "required": True},
            "agent_id": {"type": "int", "default": 0},
            "token_file": {"type": "path", "required": True},
            "token": {"type": "str", "no_log": True},
            "api_url": {"type": "str", "required": True},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "ca_file": {"type": "dict"},
            # fetch_url reads it: a redirect would resend the agent token elsewhere.
            "follow_redirects": {"type": "str", "default": "none", "choices": ["none"]},
            "passphrase_file": {"type": "path", "required": True, "no_log": False},
            "passphrase": {"type": "str", "no_log": True},
            "passphrase_new": {"type": "bool", "default": False, "no_log": False},
            "repository": {"type": "str", "required": True},
            "repository_mode": {
                "type": "str",
                "default": "local",
                "choices": ["local", "server", "remote"],
            },
            "repository_server_files": {"type": "list", "elements": "path", "default": []},
            "repository_server_pin": {"type": "dict"},
            "borg_env": {"type": "dict", "default": {}},
            "borg_min_version": {"type": "str", "default": "1.2"},
            "borg_version_cache": {"type": "path"},
            "facts_cache": {"type": "path"},
            "borg_package": {"type": "str", "default": "borgbackup"},
            "encryption": {"type": "str", "default": "repokey-blake2"},
            "open_proof": {"type": "path"},
            "key_escrowed": {"type": "bool", "default": True},
            "wrapper": {"type": "path", "required": True},
            "scheduler": {
                "type": "str",
                "required": True,
                "choices": ["auto", "systemd", "supervisor"],
            },
            "systemd_problem": {"type": "str", "default": ""},
            "systemd_files": {"type": "list", "elements": "dict", "default": []},
            "supervisor_files": {"type": "list", "elements": "dict", "default": []},
            "systemd_timers": {"type": "list", "elements": "str", "default": []},
            "supervise": {"type": "path"},
            "os_families": {"type": "list", "elements": "str", "default": ["Debian"]},
            "role_warnings": {"type": "list", "elements": "str", "default": []},
            "final": {"type": "bool", "default": False},
            "restart": {"type": "bool", "default": False},
            "host": {"type": "str", "default": "the host"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**Converge(module).run())


if __name__ == "__main__":
    main()
