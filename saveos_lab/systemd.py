"""systemd lab hosts: PID 1 is systemd, booted by systemd-nspawn over a cached Debian root.

Most real servers run systemd, so the lab has hosts where the role takes its systemd path
(timers, journal, `systemctl`) instead of the pidfile supervisor of the plain sshd hosts.

The root is built once per machine with `debootstrap --variant=minbase` (Debian 12 bookworm,
with systemd, openssh-server, python3, dbus and borgbackup: a deploy needs no network) into
ROOT_CACHE (about a minute and 310 MB, the first time only; an apt mirror must be reachable
then). A host boots `systemd-nspawn --register=no --keep-unit -b` (no machined: PID 1 of the
controller need not be systemd) over a private overlay of that root, mounted inside its own
mount namespace, so nothing the host writes reaches the cache, the controller or other hosts.
It shares the controller's network namespace like every lab host: its sshd listens on the
host's loopback address only (`ListenAddress`) and it reaches the API on 127.0.0.1.
Services a minimal server would not run in a lab are masked in the cached root (apt timers,
getty, fstrim, ...). Stopping: SIGTERM to nspawn, which asks systemd for an orderly poweroff.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from saveos_cli.errors import SaveOSError

if TYPE_CHECKING:
    from saveos_lab.lab import Lab, LabHost

FLAVOUR = "systemd"
SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "openssh-server", "python3", "dbus", "borgbackup")
# Units of a minimal Debian that have no business in a lab host (and would compete for the CPU).
MASKED = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-pstore.service",
)
MIRROR = os.environ.get("SAVEOS_LAB_MIRROR", "http://deb.debian.org/debian")
ROOT_CACHE = Path(os.environ.get("SAVEOS_LAB_ROOT_CACHE", "/var/cache/saveos/lab-roots"))
BUILD_TIMEOUT = 1200.0
BOOT_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
LAB_SSHD_CONF = "/etc/ssh/sshd_config.d/00-saveos-lab.conf"

SSHD_CONF = """\
# Written by `saveos lab up`; systemd lab host {name}. Loopback only, keys only.
ListenAddress {address}:{port}
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 200:30:400
MaxSessions 100
"""


def recipe_key() -> str:
    """Names the cached root after what went into it: another recipe builds another root."""
    recipe = "\n".join([SUITE, MIRROR, *PACKAGES, *MASKED, "v1"])
    return f"{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def root_dir() -> Path:
    return ROOT_CACHE / recipe_key()


def preflight() -> None:
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            raise SaveOSError(
                f"{tool} not found: systemd lab hosts need it",
                hint=f"Install it: apt-get install {package}",
            )


def ensure_root(log=print) -> Path:
    """The cached root, built first when missing (under a lock: one build per machine)."""
    root = root_dir()
    ready = root / ".saveos-lab-root"
    if ready.exists():
        return root
    ROOT_CACHE.mkdir(parents=True, exist_ok=True, mode=0o755)
    with open(ROOT_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return root
        log(f"building the systemd lab root in {root} (debootstrap {SUITE}, once; ~1 min)")
        started = time.monotonic()
        tmp = root.with_name(root.name + f".build-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        argv = [
            "debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            SUITE, str(tmp), MIRROR,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SaveOSError(f"debootstrap took longer than {BUILD_TIMEOUT:.0f}s") from None
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise SaveOSError(
                f"debootstrap {SUITE} failed: {lines[-1] if lines else result.returncode}",
                hint=f"The first systemd lab host needs the apt mirror {MIRROR} "
                "(SAVEOS_LAB_MIRROR); later ones use the cache.",
            )
        _configure_root(tmp)
        (tmp / ".saveos-lab-root").write_text(f"built in {time.monotonic() - started:.0f}s\n")
        tmp.rename(root)
    return root


def _configure_root(root: Path) -> None:
    """What every systemd lab host shares: masked units, no shared host keys, an empty
    machine-id (each host gets its own)."""
    for unit in MASKED:
        link = root / "etc/systemd/system" / unit
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to("/dev/null")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")


def layers(lab: Lab, name: str) -> dict[str, Path]:
    base = lab.host_dir(name)
    return {"upper": base / "root-upper", "work": base / "root-work", "merged": base / "root"}


def prepare(lab: Lab, host: LabHost) -> None:
    """The host's own files, written into its (empty on first start) overlay upper layer."""
    paths = layers(lab, host.name)
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    upper = paths["upper"]
    ssh_dir = lab.host_dir(host.name) / "ssh"
    etc_ssh = upper / "etc/ssh"
    (etc_ssh / "sshd_config.d").mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".pub"):
        shutil.copyfile(
            ssh_dir / f"ssh_host_ed25519_key{suffix}", etc_ssh / f"ssh_host_ed25519_key{suffix}"
        )
    os.chmod(etc_ssh / "ssh_host_ed25519_key", 0o600)
    (upper / LAB_SSHD_CONF.lstrip("/")).write_text(
        SSHD_CONF.format(name=host.name, address=host.address, port=host.port)
    )
    root_ssh = upper / "root/.ssh"
    root_ssh.mkdir(parents=True, exist_ok=True)
    os.chmod(upper / "root", 0o700)
    os.chmod(root_ssh, 0o700)
    shutil.copyfile(ssh_dir / "authorized_keys", root_ssh / "authorized_keys")
    os.chmod(root_ssh / "authorized_keys", 0o600)
    (upper / "etc/hostname").write_text(host.name + "\n")
    machine_id = upper / "etc/machine-id"
    if not machine_id.exists() or not machine_id.read_text().strip():
        machine_id.write_text(uuid.uuid4().hex + "\n")
    hosts_file = upper / "etc/hosts"
    hosts_file.write_text(f"127.0.0.1 localhost\n{host.address} {host.name}\n")


def spawn_argv(lab: Lab, host: LabHost, root: Path) -> list[str]:
    """unshare (a private mount namespace for the overlay) forks sh, which execs nspawn."""
    paths = layers(lab, host.name)
    opts = f"lowerdir={root},upperdir={paths['upper']},workdir={paths['work']}"
    script = (
        'set -eu\nmount -t overlay "saveos-$1" -o "$2" "$3"\n'
        'exec systemd-nspawn --register=no --keep-unit --boot --quiet --directory "$3" '
        '--hostname "$1" --machine "saveos-$1"'
    )
    return [
        "unshare", "--mount", "--propagation", "private", "--fork", "--kill-child",
        "sh", "-c", script, "saveos-lab-systemd", host.name, opts, str(paths["merged"]),
        str(lab.host_dir(host.name)),
    ]  # fmt: skip


def wait_booted(lab: Lab, host: LabHost, deadline: float) -> None:
    """SSH answers early in the boot; wait for systemd to finish it (`running`)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SaveOSError(f"systemd lab host {host.name} did not finish booting in time")
        try:
            result = lab.ssh(host.name, "systemctl is-system-running --wait", timeout=left)
        except subprocess.TimeoutExpired:
            continue
        state = result.stdout.strip()
        if state == "running":
            return
        if state in ("degraded", "maintenance", "stopping"):
            failed = lab.ssh(host.name, "systemctl --failed --no-legend --plain").stdout
            raise SaveOSError(
                f"systemd lab host {host.name} booted {state}: {failed.strip() or '?'}"
            )
        time.sleep(0.2)
