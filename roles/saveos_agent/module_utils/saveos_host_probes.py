"""What the saveos_agent_state module asks of the host and of the API before it changes anything:
the facts, Borg's version, whether the repository opens, who a token belongs to, Borg's errors;
and a local repository's key export, read from its config.

A module_utils of the role (the collection's plugins/module_utils): it runs on the host, with
the host's Python (>= 3.9).
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saveos_rules import (
    file_stamp,
    read_json_object,
    write_atomically,
)


def run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False
    )


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"[0-9]+", text)[:3])


def token_agent_id(module: AnsibleModule, token: str) -> tuple[int | None, int | None]:
    """(agent id or None, HTTP status): asks the API who the token belongs to, as the agent
    would."""
    # Imported here: a cold host's calls (no token yet, or the one just provisioned) never ask.
    from ansible.module_utils.urls import fetch_url

    response, info = fetch_url(
        module,
        module.params["api_url"].rstrip("/") + "/api/v1/agents/me",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=15,
        ca_path=module.params["ca_path"],
    )
    status = info.get("status")
    if status != 200 or response is None:
        return None, status
    try:
        return int(json.loads(response.read())["id"]), status
    except (ValueError, KeyError, TypeError):
        return None, status


# What the facts are read from, beside the files whose stamps are kept: the release files name
# the distribution, PID 1 and /run/systemd the service manager, the interpreter the python facts.
FACTS_SOURCES = (
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/debian_version",
    "/etc/lsb-release",
)
FACTS_FORMAT = 1


def _facts_key() -> list:
    try:
        with open("/proc/1/comm", encoding="utf-8") as fh:
            init = fh.read().strip()
    except OSError:
        init = None
    return [
        FACTS_FORMAT,
        [file_stamp(path) for path in FACTS_SOURCES],
        init,
        os.path.isdir("/run/systemd/system"),
        list(os.uname()),
        sys.executable,
        sys.version,
    ]


def gather_facts(module: AnsibleModule, cache: str | None = None) -> tuple[dict, dict | None]:
    """What `setup` with gather_subset [!all, !min, distribution, service_mgr, python] returns,
    and the cache entry to keep (None when the facts came from `cache`): a warm host's facts are
    the last call's while what they are read from is unchanged, and Ansible's fact collectors
    (a third of a warm call's CPU on the host) are not even imported."""
    key = _facts_key()
    cached = read_json_object(cache)
    if cached.get("key") == key and isinstance(cached.get("facts"), dict):
        return cached["facts"], None
    from ansible.module_utils.facts import ansible_collector
    from ansible.module_utils.facts.namespace import PrefixFactNamespace
    from ansible.module_utils.facts.system.distribution import DistributionFactCollector
    from ansible.module_utils.facts.system.platform import PlatformFactCollector
    from ansible.module_utils.facts.system.python import PythonFactCollector
    from ansible.module_utils.facts.system.service_mgr import ServiceMgrFactCollector

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
    facts = collector.collect(module=module)
    return facts, {"key": key, "facts": facts}


def open_digest(passphrase: str, repository: str) -> str | None:
    try:
        with open(os.path.join(repository, "config"), "rb") as fh:
            config = fh.read()
    except OSError:
        return None
    return hmac.new(passphrase.encode(), config, hashlib.sha256).hexdigest()


def proof_digest(p: dict) -> str | None:
    """The open proof's HMAC, where one can be kept: a local repokey repository (a keyfile's
    key is not in the repository's config; a remote repository's config is not here)."""
    cacheable = (
        p["open_proof"]
        and p["repository_mode"] == "local"
        and p["encryption"].startswith("repokey")
    )
    return open_digest(p["passphrase"], p["repository"]) if cacheable else None


def repository_opens(module: AnsibleModule) -> bool:
    """Whether Borg opens the repository with the passphrase file (see open_proof)."""
    p = module.params
    digest = proof_digest(p)
    if digest:
        try:
            with open(p["open_proof"], encoding="ascii") as fh:
                if hmac.compare_digest(fh.read().strip(), digest):
                    return True
        except OSError:
            pass
    env = dict(os.environ, **{k: str(v) for k, v in p["borg_env"].items()})
    if run(["borg", "info", "--json", p["repository"]], env=env).returncode != 0:
        return False
    record_open(module, digest)
    return True


def record_open(module: AnsibleModule, digest: str | None = None) -> None:
    """Keep the proof that Borg opened the repository with the passphrase (where it can be kept:
    a local repokey repository, see repository_opens)."""
    p = module.params
    digest = digest or proof_digest(p)
    if digest and not module.check_mode:
        with contextlib.suppress(OSError):
            write_atomically(p["open_proof"], (digest + "\n").encode(), 0o600, owner=(0, 0))


def repokey_export(p: dict) -> str | None:
    """What `borg key export` writes for a local repokey repository of Borg 1.x ("BORG_KEY" and
    the repository id, then the key blob of its config, as Borg's KeyManager writes it), read
    from the config Borg has just made or opened, so no second Borg starts (its start is seconds
    on a loaded host). None where the key is not there (keyfile mode, a remote repository, an
    unknown config): Borg exports it then."""
    if p["repository_mode"] != "local" or not p["encryption"].startswith("repokey"):
        return None
    config = configparser.ConfigParser(interpolation=None)
    try:
        with open(os.path.join(p["repository"], "config"), encoding="utf-8") as fh:
            config.read_file(fh)
        version = config.get("repository", "version")
        repository_id = config.get("repository", "id").strip()
        key = config.get("repository", "key", fallback="").strip()
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    if version.strip() != "1" or not re.fullmatch(r"[0-9a-f]{64}", repository_id) or not key:
        return None
    return f"BORG_KEY {repository_id}\n{key}\n"


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


def borg_error(result: subprocess.CompletedProcess, limit: int = 500) -> str:
    """The messages of Borg's --log-json lines (or its plain stderr)."""
    messages = []
    for line in result.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"message": line}
        if isinstance(entry, dict) and entry.get("message"):
            messages.append(str(entry["message"]).strip())
    return " ".join(messages)[-limit:]
