"""Repository-server hosts of the lab: repo1..repoN beside lab1..labN (`saveos lab up
--repo-servers N`), started and isolated exactly like the other lab hosts.

They take the low addresses of the lab's /24 (<net>.2 ... <net>.10), below the hosts (.11 on),
and form the inventory group `saveos_repo_servers`, which the deploy playbook sets up with the
saveos_repo_server role before the agents. Their sshd also reads each user's own
~/.ssh/authorized_keys, where the role writes the backed-up hosts' forced-command keys.
"""

from __future__ import annotations

from typing import Any

from saveos_cli.errors import SaveOSError

GROUP = "saveos_repo_servers"
PREFIX = "repo"
FIRST_OCTET = 2
MAX_REPO_SERVERS = 9
# The lab's sshd keeps its host key here (see lab.SSHD_CONFIG); the role pins it on the hosts.
HOST_KEY_FILE = "/run/saveos-lab/ssh_host_ed25519_key.pub"
SSHD_EXTRA = """\
# A repository server: the backup service user's keys are its own (forced commands only).
Match User *,!root
    AuthorizedKeysFile %h/.ssh/authorized_keys
"""


def validate_count(count: int) -> int:
    if not 0 <= count <= MAX_REPO_SERVERS:
        raise SaveOSError(f"--repo-servers must be between 0 and {MAX_REPO_SERVERS} (got {count})")
    return count


def is_repo_server(name: str) -> bool:
    return name.startswith(PREFIX) and name[len(PREFIX) :].isdigit()


def wanted(net: str, port: int, count: int, host_class) -> list:
    """repo1..repoN as lab host records (host_class is lab.LabHost)."""
    return [
        host_class(f"{PREFIX}{i}", f"{net}.{FIRST_OCTET + i - 1}", port)
        for i in range(1, validate_count(count) + 1)
    ]


def sshd_extra(name: str) -> str:
    return SSHD_EXTRA if is_repo_server(name) else ""


def inventory_groups(hosts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Split the lab's host entries into `lab` and `saveos_repo_servers` groups."""
    lab = {n: v for n, v in hosts.items() if not is_repo_server(n)}
    servers = {n: v for n, v in hosts.items() if is_repo_server(n)}
    groups: dict[str, Any] = {"lab": {"hosts": lab}}
    if servers:
        lab_vars = {"saveos_repo_server_host_key_file": HOST_KEY_FILE}
        groups[GROUP] = {"hosts": servers, "vars": lab_vars}
    return groups
