"""The lab: N real SSH hosts on one machine, each an sshd in its own mount/UTS/PID namespace.

Layout of a lab directory (0700, root):

    state.json            what runs: net, port, per host address and pids
    id_ed25519(.pub)      the one client key every host accepts for root
    known_hosts           every host's key, so SSH keeps checking host keys
    inventory.yml         Ansible inventory, group `lab` with hosts lab1..labN
    hosts/labN/ssh/       sshd_config, host key, authorized_keys
    hosts/labN/upper|work overlayfs layers: everything labN writes to /etc /var /opt /root ...
    hosts/labN/sshd.log   the host's start script and sshd output

What a host shares with the controller: the network namespace (it talks to the controller's API
on loopback), /tmp, /mnt, /media, /dev and /sys. Private: the directories in OVERLAID
(copy-on-write over the controller's, except FRESH ones which start empty), /run (fresh tmpfs),
the process table and the hostname. The lab directory itself is hidden inside each host, so hosts
cannot read the client key or each other's layers. Everything else under / (e.g. /mnt, /tmp) is the
controller's: keep secrets out of the shared /tmp when hosts must not read them.

Longer than most modules on purpose: one host's whole life (namespaces, overlay, sshd, state
file, teardown) is easier to get right read top to bottom. It is test and demo
infrastructure (package saveos_lab, apart from the product; `saveos lab` loads it when called).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from saveos_cli.errors import SaveOSError
from saveos_lab import repo_servers as lab_repo
from saveos_lab import systemd as lab_systemd

SSHD = Path("/usr/sbin/sshd")
OVERLAID = ("etc", "var", "opt", "root", "usr", "home", "srv")
# These start empty, like on a new machine, instead of showing the controller's files: the
# controller's /root holds its SSH keys and the default SAVEOS_DATA_DIR (tokens, escrow).
FRESH = ("root", "home")
MAX_HOSTS = 200
FIRST_HOST_OCTET = 11  # lab1 is <net>.11, lab2 <net>.12, ...
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
STATE_FILE = "state.json"
INVENTORY_FILE = "inventory.yml"
CLIENT_KEY = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
# Paths that would disappear under the host's own mounts or are not real directories.
FORBIDDEN_DIR_ROOTS = (Path("/run"), Path("/proc"), Path("/sys"), Path("/dev"))

# Runs as PID 1's parent inside the fresh namespaces; $1 host dir, $2 lab dir, $3 name, $4 address.
# The host dir is bound under /run before the overlays so its upper/work dirs stay reachable
# even when the lab dir lives below an overlaid directory (the default is under /root).
HOST_SCRIPT = (
    r"""
set -eu
host_dir=$1 lab_dir=$2 name=$3 address=$4
hostname "$name"
mount -t tmpfs -o mode=0755,size=64m lab-run /run
mkdir -p /run/sshd /run/saveos-lab-setup /run/saveos-lab
mount --bind "$host_dir" /run/saveos-lab-setup
layers=/run/saveos-lab-setup
for d in OVERLAID; do
  lower=/$d
  case " FRESH " in *" $d "*) lower=$layers/empty ;; esac
  mount -t overlay "saveos-$name-$d" \
    -o "lowerdir=$lower,upperdir=$layers/upper/$d,workdir=$layers/work/$d" "/$d"
done
mount --bind /run/saveos-lab-setup/ssh /run/saveos-lab
umount /run/saveos-lab-setup
rmdir /run/saveos-lab-setup
# Hide the lab dir (client key, other hosts' layers); the mount stays inside this namespace.
if [ -d "$lab_dir" ]; then mount -t tmpfs -o ro,size=4k,mode=0700 saveos-lab-hidden "$lab_dir"; fi
echo "$name" > /etc/hostname
grep -qw "$name" /etc/hosts || echo "$address $name" >> /etc/hosts
exec SSHD -D -e -f /run/saveos-lab/sshd_config
""".replace("OVERLAID", " ".join(OVERLAID))
    .replace("FRESH", " ".join(FRESH))
    .replace("SSHD", str(SSHD))
)

SSHD_CONFIG = """\
# Written by `saveos lab up`; sshd of lab host {name}.
ListenAddress {address}:{port}
HostKey /run/saveos-lab/ssh_host_ed25519_key
AuthorizedKeysFile /run/saveos-lab/authorized_keys
PidFile /run/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# The key files belong to the lab dir, not to root's home.
StrictModes no
UseDNS no
# Ansible opens many connections at once (forks, ControlPersist).
MaxStartups 200:30:400
MaxSessions 100
PrintMotd no
Subsystem sftp internal-sftp
LogLevel INFO
"""


@dataclass
class LabHost:
    name: str
    address: str
    port: int
    unshare_pid: int = 0
    sshd_pid: int = 0
    flavour: str = "sshd"  # or "systemd": PID 1 is systemd (saveos_lab.systemd)


@dataclass
class HostStatus:
    name: str
    address: str
    port: int
    pid: int
    running: bool
    answers: bool
    flavour: str = "sshd"


def require_root() -> None:
    """Namespaces and mounts need root; say so before touching anything."""
    if os.geteuid() != 0:
        raise SaveOSError(
            "saveos lab needs root: it creates namespaces and overlay mounts",
            hint="Run it as root, e.g. with sudo.",
        )


def validate_net(net: str) -> str:
    """A /24 prefix inside 127.0.0.0/8, e.g. '127.0.0'; the lab never leaves loopback."""
    match = re.fullmatch(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})", net or "")
    ok = match is not None and all(int(part) <= 255 for part in match.groups())
    if not ok or not ipaddress.ip_address(net + ".1").is_loopback:
        raise SaveOSError(
            f"--net must be a loopback /24 prefix like 127.0.0 (got {net!r})",
            hint="Lab hosts only live on 127.0.0.0/8.",
        )
    return ".".join(str(int(part)) for part in match.groups())


def validate_hosts(count: int) -> int:
    if not 1 <= count <= MAX_HOSTS:
        raise SaveOSError(f"--hosts must be between 1 and {MAX_HOSTS} (got {count})")
    return count


def validate_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise SaveOSError(f"--port must be between 1 and 65535 (got {port})")
    return port


def _proc_alive(pid: int) -> bool:
    """True when pid runs (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _reap(pid: int) -> None:
    """Collect an exited child of this process so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def ssh_banner(address: str, port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server answers on address:port with its version banner."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _address_free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise SaveOSError(
            f"{what} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}"
        )
    return result


class Lab:
    """A lab of SSH hosts recorded in one directory; see the module docstring for the layout."""

    def __init__(self, directory: str | os.PathLike, net: str = "127.0.0", port: int = 22):
        self.dir = Path(directory).expanduser().absolute()
        self.net = net
        self.port = port
        self.systemd = 0  # how many of the hosts `up` starts are systemd hosts (the last ones)
        self.systemd_root: Path | None = None

    # -- paths -------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def inventory_path(self) -> Path:
        return self.dir / INVENTORY_FILE

    @property
    def key_path(self) -> Path:
        return self.dir / CLIENT_KEY

    @property
    def known_hosts_path(self) -> Path:
        return self.dir / KNOWN_HOSTS

    def host_dir(self, name: str) -> Path:
        return self.dir / "hosts" / name

    def log_path(self, name: str) -> Path:
        return self.host_dir(name) / "sshd.log"

    # -- state -------------------------------------------------------------------------------
    def _load(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except PermissionError:
            raise SaveOSError(f"cannot read {self.state_path}: permission denied") from None
        except ValueError:
            raise SaveOSError(f"{self.state_path} is not valid JSON; remove the lab dir") from None

    def _save(self, hosts: list[LabHost]) -> None:
        state = {
            "version": 1,
            "net": self.net,
            "port": self.port,
            "inventory": str(self.inventory_path),
            "hosts": [asdict(h) for h in hosts],
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)

    def hosts(self) -> list[LabHost]:
        """The hosts recorded in the lab dir (empty when no lab is there)."""
        state = self._load()
        return [LabHost(**h) for h in state["hosts"]] if state else []

    def exists(self) -> bool:
        return self.state_path.exists()

    def _is_our_sshd(self, host: LabHost) -> bool:
        """The recorded sshd still runs as the child of our unshare (guards against pid reuse)."""
        return (
            self._is_our_unshare(host)
            and host.sshd_pid in _children(host.unshare_pid)
            and _proc_alive(host.sshd_pid)
        )

    def _is_our_unshare(self, host: LabHost) -> bool:
        argv = _cmdline(host.unshare_pid)
        return _proc_alive(host.unshare_pid) and str(self.host_dir(host.name)) in argv

    def status(self) -> list[HostStatus]:
        return [
            HostStatus(
                name=h.name,
                address=h.address,
                port=h.port,
                pid=h.sshd_pid,
                running=self._is_our_sshd(h),
                answers=ssh_banner(h.address, h.port),
                flavour=h.flavour,
            )
            for h in self.hosts()
        ]

    # -- up ----------------------------------------------------------------------------------
    def up(self, hosts: int, systemd: int = 0, repo_servers: int = 0) -> Path:
        """Start lab1..labN and repo1..repoM (or keep them running) and return the inventory
        path; the last `systemd` hosts boot systemd as PID 1 (saveos_lab.systemd)."""
        require_root()
        validate_hosts(hosts)
        lab_repo.validate_count(repo_servers)
        if not 0 <= systemd <= hosts:
            raise SaveOSError(f"--systemd must be between 0 and --hosts ({hosts}), got {systemd}")
        self.systemd = systemd
        self.net = validate_net(self.net)
        validate_port(self.port)
        self._preflight()
        with self._locked(create=True):
            state = self._load()
            if state and (state["net"], state["port"]) != (self.net, self.port):
                raise SaveOSError(
                    f"a lab on {state['net']}.x port {state['port']} already runs in {self.dir}",
                    hint="Stop it first with `saveos lab down`, or pick another --dir.",
                )
            fresh = state is None
            if fresh:
                self._check_empty_dir()
            try:
                self._up_locked(hosts, repo_servers)
            except BaseException:
                if fresh:
                    self._down_locked()
                    with contextlib.suppress(OSError):
                        self.dir.rmdir()
                raise
        return self.inventory_path

    def _preflight(self) -> None:
        if not (SSHD.is_file() and os.access(SSHD, os.X_OK)):
            raise SaveOSError(
                f"{SSHD} not found: the lab needs the OpenSSH server",
                hint="Install it: apt-get install openssh-server",
            )
        for tool, package in (("ssh-keygen", "openssh-client"), ("unshare", "util-linux")):
            if shutil.which(tool) is None:
                raise SaveOSError(
                    f"{tool} not found", hint=f"Install it: apt-get install {package}"
                )
        for root in FORBIDDEN_DIR_ROOTS:
            if self.dir == root or root in self.dir.parents:
                raise SaveOSError(f"the lab dir cannot live under {root} (got {self.dir})")
        for d in OVERLAID:
            if not Path("/", d).is_dir():
                raise SaveOSError(f"/{d} does not exist; lab hosts overlay it")
        self._probe_namespaces()
        if self.systemd:
            lab_systemd.preflight()

    def _probe_namespaces(self) -> None:
        """Fail early with a clear message when namespaces or overlayfs are unavailable."""
        with tempfile.TemporaryDirectory(prefix="saveos-lab-probe-") as tmp:
            for sub in ("lower", "upper", "work", "merged"):
                Path(tmp, sub).mkdir()
            probe = subprocess.run(
                ["unshare", "--mount", "--uts", "--pid", "--fork", "--propagation", "private",
                 "--mount-proc", "true"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if probe.returncode != 0:
                raise SaveOSError(
                    "cannot create mount/UTS/PID namespaces: " + probe.stderr.strip(),
                    hint="The lab needs root on a kernel that allows unshare (not a locked-down "
                    "container).",
                )
            opts = f"lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work"
            probe = subprocess.run(
                ["unshare", "--mount", "--propagation", "private",
                 "mount", "-t", "overlay", "saveos-probe", "-o", opts, f"{tmp}/merged"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if probe.returncode != 0:
                raise SaveOSError(
                    "overlayfs is unavailable: " + probe.stderr.strip(),
                    hint="Load the overlay module (modprobe overlay).",
                )

    def _check_empty_dir(self) -> None:
        """Refuse to take over a directory that holds something else (down deletes files)."""
        if self.dir.exists():
            if not self.dir.is_dir():
                raise SaveOSError(f"{self.dir} exists and is not a directory")
            if any(self.dir.iterdir()):
                raise SaveOSError(
                    f"{self.dir} is not empty and holds no SaveOS lab",
                    hint="Pick an empty or new directory with --dir.",
                )

    @contextlib.contextmanager
    def _locked(self, create: bool):
        if create:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _up_locked(self, count: int, repo_servers: int = 0) -> None:
        os.chmod(self.dir, 0o700)
        self._client_key()
        first_systemd = count - self.systemd + 1
        wanted = [
            LabHost(
                f"lab{i}",
                f"{self.net}.{FIRST_HOST_OCTET + i - 1}",
                self.port,
                flavour=lab_systemd.FLAVOUR if i >= first_systemd else "sshd",
            )
            for i in range(1, count + 1)
        ] + lab_repo.wanted(self.net, self.port, repo_servers, LabHost)
        if any(h.flavour == lab_systemd.FLAVOUR for h in wanted):
            self.systemd_root = lab_systemd.ensure_root()
        recorded = {h.name: h for h in self.hosts()}
        # Hosts beyond the wanted count go away entirely.
        for name in sorted(set(recorded) - {h.name for h in wanted}):
            self._stop([recorded.pop(name)])
            shutil.rmtree(self.host_dir(name), ignore_errors=True)
        hosts: list[LabHost] = []
        to_start: list[LabHost] = []
        for want in wanted:
            have = recorded.get(want.name)
            if have and have.flavour != want.flavour:  # another kind of host: start afresh
                self._stop([recorded.pop(want.name)])
                shutil.rmtree(self.host_dir(want.name), ignore_errors=True)
                have = None
            if have and self._is_our_sshd(have):
                hosts.append(have)
                continue
            if have:  # recorded but dead: clean its leftovers, keep its layers
                self._stop([have])
            if not _address_free(want.address, want.port):
                raise SaveOSError(
                    f"{want.address}:{want.port} is already in use",
                    hint="Pick another --net or --port, or stop what listens there.",
                )
            self._prepare_host(want)
            hosts.append(want)
            to_start.append(want)
        for host in to_start:
            self._spawn(host)
        # Record pids before waiting so a failed start can still be stopped by `down`.
        self._write_known_hosts(hosts)
        self._write_inventory(hosts)
        self._save(hosts)
        self._wait_ready(to_start)
        self._save(hosts)

    def _client_key(self) -> None:
        if not self.key_path.exists():
            _run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "saveos-lab-client",
                 "-f", str(self.key_path)],
                "ssh-keygen (client key)",
            )  # fmt: skip
        os.chmod(self.key_path, 0o600)

    def _prepare_host(self, host: LabHost) -> None:
        hdir = self.host_dir(host.name)
        ssh_dir = hdir / "ssh"
        for sub in ("upper", "work"):
            for d in OVERLAID:
                (hdir / sub / d).mkdir(parents=True, exist_ok=True)
        (hdir / "empty").mkdir(exist_ok=True)
        for d in FRESH:  # the merged dir takes the upper dir's mode
            os.chmod(hdir / "upper" / d, Path("/", d).stat().st_mode & 0o7777)
        ssh_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(hdir, 0o700)
        os.chmod(ssh_dir, 0o700)
        host_key = ssh_dir / "ssh_host_ed25519_key"
        if not host_key.exists():
            _run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"saveos-{host.name}",
                 "-f", str(host_key)],
                f"ssh-keygen (host key of {host.name})",
            )  # fmt: skip
        shutil.copyfile(self.key_path.with_suffix(".pub"), ssh_dir / "authorized_keys")
        (ssh_dir / "sshd_config").write_text(
            SSHD_CONFIG.format(name=host.name, address=host.address, port=host.port)
            + lab_repo.sshd_extra(host.name)
        )
        if host.flavour == lab_systemd.FLAVOUR:
            lab_systemd.prepare(self, host)

    def _spawn(self, host: LabHost) -> None:
        hdir = self.host_dir(host.name)
        argv = [
            "unshare", "--mount", "--uts", "--propagation", "private", "--pid", "--fork",
            "--kill-child", "--mount-proc",
            "bash", "-c", HOST_SCRIPT, "saveos-lab-host", str(hdir), str(self.dir), host.name,
            host.address,
        ]  # fmt: skip
        if host.flavour == lab_systemd.FLAVOUR:
            argv = lab_systemd.spawn_argv(self, host, self.systemd_root)
        with open(self.log_path(host.name), "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: a Ctrl-C on the controller leaves hosts alone
                close_fds=True,
            )
        host.unshare_pid = proc.pid
        host.sshd_pid = 0
        # unshare forks the namespace's PID 1 (bash, then exec sshd) right away.
        deadline = time.monotonic() + START_TIMEOUT
        while not host.sshd_pid and time.monotonic() < deadline:
            kids = _children(proc.pid)
            if kids:
                host.sshd_pid = kids[0]
            elif proc.poll() is not None:
                break
            else:
                time.sleep(0.005)

    def _wait_ready(self, hosts: list[LabHost]) -> None:
        pending = list(hosts)
        # systemd hosts boot first: their sshd starts a few seconds later
        slow = any(h.flavour == lab_systemd.FLAVOUR for h in hosts)
        deadline = time.monotonic() + (lab_systemd.BOOT_TIMEOUT if slow else START_TIMEOUT)
        while pending:
            for host in list(pending):
                if ssh_banner(host.address, host.port, timeout=0.5):
                    pending.remove(host)
                elif not _proc_alive(host.sshd_pid) and not _proc_alive(host.unshare_pid):
                    raise self._start_error(host)
            if pending and time.monotonic() > deadline:
                raise self._start_error(pending[0], timed_out=True)
            if pending:
                time.sleep(0.02)
        boot_deadline = time.monotonic() + lab_systemd.BOOT_TIMEOUT
        for host in hosts:
            if host.flavour == lab_systemd.FLAVOUR:
                lab_systemd.wait_booted(self, host, boot_deadline)

    def _start_error(self, host: LabHost, timed_out: bool = False) -> SaveOSError:
        try:
            lines = self.log_path(host.name).read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        last = lines[-1] if lines else "no output"
        log = "\n".join(lines[-10:])
        if "Address already in use" in log:
            return SaveOSError(f"{host.address}:{host.port} is already in use ({host.name})")
        if "unshare" in last and "failed" in last:
            return SaveOSError(f"{host.name}: namespaces unavailable: {last}")
        if "overlay" in log and "mount" in log:
            return SaveOSError(
                f"{host.name}: overlay mount failed: {last}",
                hint="The lab dir must not sit on an overlayfs itself; try --dir /tmp/saveos-lab.",
            )
        what = f"did not answer within {START_TIMEOUT:.0f}s" if timed_out else "failed to start"
        return SaveOSError(f"lab host {host.name} {what}: {last}")

    def _write_known_hosts(self, hosts: list[LabHost]) -> None:
        lines = []
        for h in hosts:
            key = (self.host_dir(h.name) / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
            target = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
            lines.append(f"{target} {key[0]} {key[1]}\n")
        self.known_hosts_path.write_text("".join(lines))

    def _write_inventory(self, hosts: list[LabHost]) -> None:
        common = (
            f"-o UserKnownHostsFile={shlex.quote(str(self.known_hosts_path))}"
            " -o StrictHostKeyChecking=yes"
        )
        entries = {
            h.name: {
                "ansible_host": h.address,
                "ansible_port": h.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key_path),
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_common_args": common,
            }
            for h in hosts
        }
        systemd = [h.name for h in hosts if h.flavour == lab_systemd.FLAVOUR]
        children = {
            **({"lab_systemd": {"hosts": dict.fromkeys(systemd)}} if systemd else {}),
            **lab_repo.inventory_groups(entries),
        }
        inventory = {"all": {"children": children}}
        header = f"# SaveOS lab inventory, written by `saveos lab up` ({len(hosts)} hosts).\n"
        self.inventory_path.write_text(
            header + yaml.safe_dump(inventory, sort_keys=False, width=1000)
        )

    def ssh(self, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a shell command as root on a lab host over real SSH (for tests and debugging)."""
        host = next((h for h in self.hosts() if h.name == name), None)
        if host is None:
            raise SaveOSError(f"no lab host {name} in {self.dir}")
        argv = [
            "ssh", "-i", str(self.key_path), "-p", str(host.port),
            "-o", f"UserKnownHostsFile={self.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            f"root@{host.address}", command,
        ]  # fmt: skip
        # No stdin: ssh makes a non-tty stdin non-blocking and, killed on a timeout, leaves it so
        # for every later process sharing it (ansible then refuses to start).
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    # -- down --------------------------------------------------------------------------------
    def down(self) -> bool:
        """Stop every host of the lab and remove its files; False when there was no lab."""
        require_root()
        if not self.dir.is_dir() or not self.exists():
            return False
        with self._locked(create=False):
            if not self.exists():
                return False
            self._down_locked()
        with contextlib.suppress(OSError):
            self.dir.rmdir()  # only when nothing else was left in it
        return True

    def stop_host(self, name: str) -> None:
        """Stop one host, as if it went down; its layers stay and `up` starts it again."""
        require_root()
        with self._locked(create=False):
            self._stop([h for h in self.hosts() if h.name == name])

    def _down_locked(self) -> None:
        self._stop(self.hosts())
        for name in (STATE_FILE, INVENTORY_FILE, KNOWN_HOSTS, CLIENT_KEY, CLIENT_KEY + ".pub"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        shutil.rmtree(self.dir / "hosts", ignore_errors=True)

    def _stop(self, hosts: list[LabHost]) -> None:
        """SIGTERM each sshd (PID 1 of its namespace: the kernel then ends the rest), then KILL."""
        ours = [h for h in hosts if self._is_our_sshd(h)]
        for h in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.sshd_pid, signal.SIGTERM)
        # a systemd host powers off in order (nspawn turns SIGTERM into SIGRTMIN+3 for systemd)
        slow = any(h.flavour == lab_systemd.FLAVOUR for h in ours)
        deadline = time.monotonic() + (lab_systemd.STOP_TIMEOUT if slow else STOP_TIMEOUT)
        while any(_proc_alive(h.sshd_pid) for h in ours) and time.monotonic() < deadline:
            time.sleep(0.02)
        for h in ours:
            if _proc_alive(h.sshd_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(h.sshd_pid, signal.SIGKILL)
        # unshare exits once its child is gone; kill it if it lingers (it ignores SIGTERM).
        for h in hosts:
            deadline = time.monotonic() + STOP_TIMEOUT
            while self._is_our_unshare(h) and time.monotonic() < deadline:
                _reap(h.unshare_pid)
                time.sleep(0.01)
            if self._is_our_unshare(h):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(h.unshare_pid, signal.SIGKILL)
            _reap(h.unshare_pid)
