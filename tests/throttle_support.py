"""A real backup that lasts: every `borg create` started in a lab host is caught the moment it
appears and put in a cgroup (v1 cpu controller, on the controller) that allows it 1 % of a CPU,
until the test releases it. Borg then reads and stores the same source as always, only slowly,
like the multi-hour first backup of a large host; nothing of the agent is changed or faked.

A lab host is known by its PID namespace (every process in it shares one, whoever started it:
the supervised daemon, a systemd service): its inode is read over SSH, and /proc on the
controller is scanned for borg processes in that namespace.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from pathlib import Path

CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
QUOTA_US = 1_000  # 1 % of one CPU


def pid_namespace(lab, host: str) -> str:
    """The `pid:[inode]` of a lab host's PID namespace, as its own shell sees it."""
    result = lab.ssh(host, "readlink /proc/self/ns/pid", timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _is_borg_create(pid: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    names = [a.rsplit(b"/", 1)[-1] for a in argv[:3]]
    return b"borg" in names and b"create" in argv


class BorgThrottle:
    """with BorgThrottle({host: ns}) as t: ...; t.caught[host] is the pid of its borg create,
    t.release() lets every caught borg run at full speed again."""

    def __init__(self, namespaces: dict[str, str], poll_s: float = 0.05):
        if not (CPU_CGROUPS / "cgroup.procs").exists():
            raise RuntimeError(f"no cgroup v1 cpu controller at {CPU_CGROUPS}")
        self.namespaces = {ns: host for host, ns in namespaces.items()}
        self.poll_s = poll_s
        self.group = CPU_CGROUPS / f"saveos-test-{uuid.uuid4().hex[:12]}"
        self.caught: dict[str, int] = {}
        self.caught_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="borg-throttle", daemon=True)

    def __enter__(self) -> BorgThrottle:
        self.group.mkdir()
        (self.group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.group / "cpu.cfs_quota_us").write_text(str(QUOTA_US))
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    host = self.namespaces.get(os.readlink(f"/proc/{pid}/ns/pid"))
                except OSError:
                    continue
                if host is None or host in self.caught or not _is_borg_create(pid):
                    continue
                with contextlib.suppress(OSError):  # it may have ended meanwhile
                    (self.group / "cgroup.procs").write_text(pid)
                    self.caught[host] = int(pid)
                    self.caught_at[host] = time.monotonic()
            self._stop.wait(self.poll_s)

    def alive(self, host: str) -> bool:
        """Is the borg caught for `host` still running (not a reused pid)?"""
        pid = self.caught.get(host)
        return pid is not None and _is_borg_create(str(pid))

    def throttled_periods(self) -> int:
        stat = dict(ln.split() for ln in (self.group / "cpu.stat").read_text().splitlines())
        return int(stat.get("nr_throttled", 0))

    def release(self) -> None:
        """Full speed again for what was caught; nothing more is caught."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            (self.group / "cpu.cfs_quota_us").write_text("-1")

    def __exit__(self, *exc) -> None:
        self.release()
        procs = CPU_CGROUPS / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in (self.group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    procs.write_text(pid)
        deadline = time.monotonic() + 10
        while self.group.exists() and time.monotonic() < deadline:
            try:
                self.group.rmdir()
            except OSError:
                time.sleep(0.2)
