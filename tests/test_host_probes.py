"""What the deploy's host call learns of Borg (the role's module_utils saveos_host_probes): its
version, asked of Borg once, then kept in a cache until Borg changes, i.e. until an upgrade
replaces its script or the files of its package; its facts, kept alike; a local repository's
key export, read from the repository's config."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import saveos_rules

UTILS = Path(__file__).resolve().parent.parent / "roles" / "saveos_agent" / "module_utils"


@pytest.fixture
def probes(monkeypatch):
    """The module_utils file as Ansible ships it to a host, beside its sibling saveos_rules."""
    monkeypatch.setitem(sys.modules, "ansible.module_utils.saveos_rules", saveos_rules)
    spec = importlib.util.spec_from_file_location("host_probes", UTILS / "saveos_host_probes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replace(path: Path, text: str) -> None:
    """As a package manager installs a file: written beside it, then renamed over it (a file
    already so is left alone)."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    new = path.with_name(f".{path.name}.new")
    new.write_text(text)
    new.chmod(0o755)
    os.replace(new, path)


def _install_borg(root: Path, version: str, interpreter: str = sys.executable) -> None:
    _replace(root / "lib" / "borg" / "__init__.py", f"__version__ = {version!r}\n")
    _replace(root / "bin" / "borg", f"#!/usr/bin/env PYTHONPATH={root / 'lib'} {interpreter}\n")


def test_borg_version_is_asked_once_and_again_after_an_upgrade(probes, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cache = str(tmp_path / "etc" / ".borg-version")
    (tmp_path / "etc").mkdir()
    asked = []
    real_ask = saveos_rules._ask
    monkeypatch.setattr(saveos_rules, "_ask", lambda argv: asked.append(argv) or real_ask(argv))

    _install_borg(tmp_path, "1.2.3")
    assert saveos_rules.borg_version("borg", cache) == "1.2.3" and len(asked) == 1
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert saveos_rules.borg_version("borg", cache) == "1.2.3" and len(asked) == 1  # from the cache

    _install_borg(tmp_path, "1.4.1")  # the package's files change, the script does not
    assert saveos_rules.borg_version("borg", cache) == "1.4.1" and len(asked) == 2
    assert saveos_rules.borg_version("borg", cache) == "1.4.1" and len(asked) == 2

    # the script replaced (another interpreter): asked again, though the package is the same
    other = tmp_path / "python3"
    other.symlink_to(sys.executable)
    _install_borg(tmp_path, "1.4.1", interpreter=str(other))
    assert saveos_rules.borg_version("borg", cache) == "1.4.1" and len(asked) == 3


def test_a_probe_keeps_nothing_by_itself(tmp_path, monkeypatch):
    """The host call keeps the entry only outside check mode, once its directories exist."""
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "borg-version.json"
    _install_borg(tmp_path, "1.2.3")
    version, entry = saveos_rules.probe_borg_version("borg", str(cache))
    assert version == "1.2.3" and entry["version"] == "1.2.3"
    assert not cache.exists()


def test_no_borg_on_path_is_no_version(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert saveos_rules.borg_version("borg", str(tmp_path / "borg-version.json")) is None


def test_a_local_repokey_export_is_what_borg_key_export_writes(probes, tmp_path, monkeypatch):
    """The deploy escrows a local repokey repository's key read from its config (no second Borg
    process): byte for byte what `borg key export` writes; Borg is asked where it is not there."""
    monkeypatch.setenv("BORG_BASE_DIR", str(tmp_path / "base"))
    monkeypatch.setenv("BORG_PASSPHRASE", "a passphrase for this test only")
    repository = tmp_path / "repo"
    p = {"repository_mode": "local", "encryption": "repokey-blake2", "repository": str(repository)}
    assert probes.repokey_export(p) is None  # no repository yet
    subprocess.run(["borg", "init", "--encryption", "repokey-blake2", str(repository)], check=True)
    subprocess.run(["borg", "key", "export", str(repository), str(tmp_path / "k")], check=True)
    assert probes.repokey_export(p) == (tmp_path / "k").read_text()
    for other in ({"encryption": "keyfile-blake2"}, {"repository_mode": "remote"}):
        assert probes.repokey_export({**p, **other}) is None
    config = repository / "config"
    config.write_text(config.read_text().replace("version = 1", "version = 2"))
    assert probes.repokey_export(p) is None  # not a config of Borg 1.x


@pytest.fixture
def module(monkeypatch):
    """A real AnsibleModule (the fact collectors ask it for binaries and commands)."""
    from ansible.module_utils import basic

    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": {}}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    return basic.AnsibleModule(argument_spec={})


def test_facts_are_gathered_once_and_again_when_what_they_are_read_from_changes(
    probes, module, tmp_path, monkeypatch
):
    """A warm host call reads its facts from the cache: Ansible's collectors run only when a
    release file, PID 1, the service manager's directory, the kernel or the interpreter differ."""
    release = tmp_path / "os-release"
    release.write_text('ID=debian\nVERSION_ID="12"\n')
    monkeypatch.setattr(probes, "FACTS_SOURCES", (*probes.FACTS_SOURCES, str(release)))
    cache = str(tmp_path / ".facts")

    facts, entry = probes.gather_facts(module, cache)
    assert entry is not None and facts["ansible_python"]["executable"] == sys.executable
    assert facts["ansible_os_family"] and facts["ansible_service_mgr"]
    saveos_rules.keep_entry(cache, entry)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    again, none = probes.gather_facts(module, cache)
    assert none is None and again == json.loads(json.dumps(facts))

    # A cache that holds other facts under the same key is what the call returns: proof that
    # nothing was gathered.
    marked = {"ansible_distribution": "Marked"}
    saveos_rules.keep_entry(cache, {"key": entry["key"], "facts": marked})
    assert probes.gather_facts(module, cache) == (marked, None)

    _replace(release, 'ID=debian\nVERSION_ID="13"\n')  # an upgrade replaces the release file
    facts, entry = probes.gather_facts(module, cache)
    assert entry is not None and facts["ansible_distribution"] != "Marked"
    saveos_rules.keep_entry(cache, entry)
    assert probes.gather_facts(module, cache)[1] is None

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))  # another interpreter
    assert probes.gather_facts(module, cache)[1] is not None
    # A cache that is no JSON object is gathered past, never a failure.
    Path(cache).write_text("[1, 2]")
    assert probes.gather_facts(module, cache)[1] is not None


def test_a_cold_host_keeps_its_borg_version_once_its_directory_exists(tmp_path, monkeypatch):
    """The host call probes Borg before it creates the config directory (a Borg too old is
    refused before any change): the entry is kept after the directories exist."""
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _install_borg(tmp_path, "1.2.3")
    cache = tmp_path / "state" / "borg-version.json"
    version, entry = saveos_rules.probe_borg_version("borg", str(cache))
    assert version == "1.2.3" and entry is not None
    saveos_rules.keep_entry(str(cache), entry)  # no directory yet: nothing, and no failure
    assert not cache.exists()
    cache.parent.mkdir()
    saveos_rules.keep_entry(str(cache), entry)
    assert saveos_rules.probe_borg_version("borg", str(cache)) == ("1.2.3", None)
