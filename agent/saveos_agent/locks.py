"""Inspect a local borg 1.x repository lock to tell a stale lock of this host from a live one.

borg 1.2 layout: `<repo>/lock.exclusive/` is a directory holding one empty file per holder named
`<hostid>.<pid>-<thread hex>`, and `<repo>/lock.roster` is JSON
`{"exclusive": [[hostid, pid, thread]], "shared": [...]}`. hostid is `BORG_HOST_ID` or
`<fqdn>@<uuid.getnode()>`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    thread: int

    @property
    def this_host(self) -> bool:
        return is_this_host(self.host)

    @property
    def alive(self) -> bool:
        # a holder on another host cannot be checked: assume it is alive
        return not self.this_host or pid_alive(self.pid)

    def describe(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"host {self.host} pid {self.pid} ({state})"


def is_this_host(host: str) -> bool:
    import socket
    import uuid

    explicit = os.environ.get("BORG_HOST_ID")
    if explicit:
        return host == explicit
    name, sep, node = host.rpartition("@")
    if not sep or node != str(uuid.getnode()):
        return False
    return name.split(".")[0] == socket.gethostname().split(".")[0]


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie holds no lock any more
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def holders(repo_path: str) -> List[Holder]:
    """Every holder named in the lock directory or the roster (deduplicated)."""
    found = []
    lock_dir = os.path.join(repo_path, "lock.exclusive")
    try:
        names = os.listdir(lock_dir)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    for name in names:
        try:
            host_pid, thread = name.rsplit("-", 1)
            host, pid = host_pid.rsplit(".", 1)
            found.append(Holder(host, int(pid), int(thread, 16)))
        except ValueError:
            found.append(Holder(name, -1, 0))  # unknown format: never treated as ours
    try:
        with open(os.path.join(repo_path, "lock.roster")) as fh:
            roster = json.load(fh)
        for key in ("exclusive", "shared"):
            for host, pid, thread in roster.get(key, []):
                found.append(Holder(str(host), int(pid), int(thread)))
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    unique = []
    for holder in found:
        if holder not in unique:
            unique.append(holder)
    return unique


def state(repo_path: str) -> str:
    """'free', 'stale' (every holder is a dead process of this host) or 'live'."""
    found = holders(repo_path)
    if not found:
        return "free"
    if all(h.this_host and h.pid > 0 and not h.alive for h in found):
        return "stale"
    return "live"
