"""The inventory's hosts as the controller reaches them: their connection vars, their
`saveos_*` vars, and where the role put things on each (its own variables, rendered with the
host's vars). Escrow verify, recover, the central prune and the offsite commands share them."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saveos_cli import repo_servers
from saveos_cli.errors import SaveOSError
from saveos_cli.runner import ROLES_DIR

# Where the role put things on a host: its own variables, rendered with the host's inventory
# vars (the role is their one home; an inventory that overrides them is followed).
ROLE_DIR = ROLES_DIR / "saveos_agent"
LAYOUT = {
    "repository": "saveos_agent_repository_url | default(saveos_agent_repository)",
    "agent_pyz": "saveos_agent_pyz",
    "offsite_python": "saveos_agent_offsite_venv ~ '/bin/python'",
    "offsite_config": "saveos_agent_offsite_config_file",
}


@dataclass
class Host:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    ssh_args: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    layout: dict[str, str] = field(default_factory=dict)
    # The inventory's groups (name -> host names, in inventory order), as Ansible's `groups`.
    groups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def repository(self) -> str:
        return self.layout["repository"]

    def ssh_base(self) -> list[str]:
        argv = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.key_file:
            argv += ["-i", self.key_file]
        return argv + self.ssh_args

    def ssh(
        self, command: str, stdin: bytes | None = None, timeout: float = 3600
    ) -> subprocess.CompletedProcess:
        argv = [*self.ssh_base(), f"{self.user}@{self.address}", command]
        try:
            return subprocess.run(argv, input=stdin or b"", capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise SaveOSError(f"{self.name}: ssh command timed out after {timeout:.0f}s.") from exc


def load_hosts(inventory: Path, limit: str | None = None) -> list[Host]:
    """The inventory's hosts (restricted by an Ansible pattern) with their merged vars."""
    if not inventory.exists():
        raise SaveOSError(f"inventory {inventory} does not exist.")
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    _init_plugins()
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(inventory)])
    if limit:
        manager.subset(limit)
    variables = VariableManager(loader=loader, inventory=manager)
    defaults, role_vars = (_role_file(loader, part) for part in ("defaults", "vars"))
    hosts = []
    for item in manager.get_hosts("all"):
        hv = variables.get_vars(host=item)
        common = str(hv.get("ansible_ssh_common_args") or "")
        hosts.append(
            Host(
                name=item.name,
                address=str(hv.get("ansible_host") or item.name),
                port=int(hv.get("ansible_port") or 22),
                user=str(hv.get("ansible_user") or "root"),
                key_file=hv.get("ansible_ssh_private_key_file"),
                ssh_args=shlex.split(common),
                vars={k: v for k, v in hv.items() if k.startswith("saveos_")},
                layout=_layout(loader, {**defaults, **hv, **role_vars}),
                groups={g: list(names) for g, names in (hv.get("groups") or {}).items()},
            )
        )
    if not hosts:
        target = f" matches --limit {limit!r}" if limit else ""
        raise SaveOSError(f"no host in {inventory}{target}.")
    return hosts


def _init_plugins() -> None:
    """What ansible's own commands do first: the role's variables name lookup plugins
    (`ansible.builtin.vars`, `ansible.builtin.env`), found through the collection loader."""
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader import AnsibleCollectionConfig

    if not AnsibleCollectionConfig.collection_finder:
        init_plugin_loader()


def _role_file(loader, part: str) -> dict:
    """The role's defaults/ or vars/ main.yml, its templates trusted like Ansible trusts them."""
    from ansible.template import trust_as_template

    data = loader.load_from_file(str(ROLE_DIR / part / "main.yml")) or {}
    return {k: trust_as_template(v) if isinstance(v, str) else v for k, v in data.items()}


def _layout(loader, variables: dict) -> dict[str, str]:
    from ansible.template import Templar, trust_as_template

    templar = Templar(loader=loader, variables=variables)
    return {
        key: str(templar.template(trust_as_template(f"{{{{ {expression} }}}}")))
        for key, expression in LAYOUT.items()
    }


def backed_up(hosts: list[Host]) -> list[Host]:
    """The hosts that have a repository of their own (not the repository servers)."""
    return [h for h in hosts if h.name not in h.groups.get(repo_servers.GROUP, [])]


def find_host(inventory: Path, name: str) -> Host:
    for host in load_hosts(inventory):
        if host.name == name:
            return host
    raise SaveOSError(f"host {name!r} is not in {inventory}.")
