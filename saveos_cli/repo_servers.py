"""Where each host's repository lives, seen from the controller, and the server-side grants.

The inventory decides, with the same rules as the roles (roles/saveos_agent/vars/main.yml):
a host with no `saveos_agent_repository` backs up to `saveos_agent_repository_server`, by
default the first host of the group `saveos_repo_servers`, into `<root>/<host>` there; the
server's `saveos_repo_server_*` inventory vars override the saveos_repo_server role's defaults.
The controller reaches a server as Ansible does (its inventory connection, root), and changes
its keys only through the server's own helper, saveos-repo-keys.
"""

from __future__ import annotations

import functools
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from saveos_cli.errors import EXIT_FLEET, SaveOSError

if TYPE_CHECKING:
    from saveos_cli.inventory_hosts import Host

ROLES = Path(__file__).resolve().parent.parent / "roles"
ROLE_DEFAULTS = ROLES / "saveos_repo_server" / "defaults" / "main.yml"
ROLE_VARS = ROLES / "saveos_repo_server" / "vars" / "main.yml"
GROUP = "saveos_repo_servers"
HELPER = "/usr/local/sbin/saveos-repo-keys"


@functools.cache
def role_defaults() -> dict[str, Any]:
    return yaml.safe_load(ROLE_DEFAULTS.read_text())


@functools.cache
def role_vars() -> dict[str, Any]:
    return yaml.safe_load(ROLE_VARS.read_text())


def server_var(server: Host, key: str) -> Any:
    """`saveos_repo_server_<key>` of a server: its inventory value, else the role's default."""
    name = f"saveos_repo_server_{key}"
    if name in server.vars:
        return server.vars[name]
    return role_defaults().get(name)


@dataclass
class ServerRepository:
    """A host's repository on a SaveOS repository server."""

    host: str
    server: Host
    user: str
    address: str
    port: int
    path: str

    @property
    def url(self) -> str:
        """The URL as the backed-up hosts use it (through the service user's forced command)."""
        return f"ssh://{self.user}@{self.address}:{self.port}{self.path}"

    def known_hosts_line(self, host_key: str) -> str:
        target = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{target} {host_key}\n"

    def admin_url(self) -> str:
        """The same repository through the controller's own (root) login to the server."""
        return f"ssh://{self.server.user}@{self.server.address}:{self.server.port}{self.path}"

    def helper(self, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
        """Run saveos-repo-keys on the server; its JSON answer, or a clear error."""
        command = shlex.join([HELPER, *args])
        proc = self.server.ssh(command, stdin=stdin, timeout=120)
        try:
            answer = json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        except (IndexError, ValueError):
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SaveOSError(
                f"{self.server.name}: saveos-repo-keys {args[0]} failed: "
                f"{err[-1] if err else 'exit ' + str(proc.returncode)} (is the server deployed?)",
                exit_code=EXIT_FLEET,
            ) from None
        if proc.returncode != 0 or answer.get("failed"):
            raise SaveOSError(
                f"{self.server.name}: saveos-repo-keys {args[0]}: {answer.get('msg')}",
                exit_code=EXIT_FLEET,
            )
        return answer

    def grant(self, grantee: str, public_key: str) -> dict[str, Any]:
        """A second, separate key line for this repository (removed again by revoke)."""
        return self.helper("grant", self.host, "--to", grantee, "--key", public_key)

    def revoke(self, grantee: str) -> dict[str, Any]:
        return self.helper("revoke", self.host, "--to", grantee)


def server_name(host: Host) -> str | None:
    """The repository server of `host` per the inventory, or None (a local or given URL)."""
    v = host.vars
    if v.get("saveos_agent_repository"):
        return None
    if v.get("saveos_agent_repository_server"):
        return str(v["saveos_agent_repository_server"])
    group = str(v.get("saveos_agent_repository_servers_group") or GROUP)
    members = host.groups.get(group) or []
    return members[0] if members else None


def location(host: Host, hosts: dict[str, Host]) -> ServerRepository | None:
    """Where `host`'s repository lives when it is on a repository server."""
    name = server_name(host)
    if name is None:
        return None
    server = hosts.get(name)
    if server is None:
        raise SaveOSError(f"{host.name}: its repository server {name!r} is not in the inventory.")
    defaults = role_defaults()

    def var(key: str, fallback: Any) -> Any:
        return server.vars.get(f"saveos_repo_server_{key}") or fallback

    return ServerRepository(
        host=host.name,
        server=server,
        user=str(var("user", defaults["saveos_repo_server_user"])),
        address=str(var("address", server.address)),
        port=int(var("port", server.port)),
        path=f"{str(var('root', defaults['saveos_repo_server_root'])).rstrip('/')}/{host.name}",
    )
