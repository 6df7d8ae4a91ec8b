"""The lab: real sshd hosts in namespaces, reached with real SSH and Ansible."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from ansible_support import ansible
from conftest import REPO_ROOT, free_port, lab_net, require_root

from saveos_cli.errors import SaveOSError
from saveos_lab import lab as lab_module
from saveos_lab.lab import Lab


def cli(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()):
    return subprocess.run(
        [*prefix, sys.executable, "-m", "saveos_cli.app", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )


def mounts_mentioning(path: Path) -> list[str]:
    """Mount lines in any process's mount namespace that refer to path (the lab's mounts do)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        found += [line for line in text.splitlines() if str(path) in line]
    return found


def pids_of(cmdline_prefix: bytes) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(cmdline_prefix):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.lab
def test_ansible_ping_reaches_every_host_over_ssh(lab3):
    result = ansible("ansible", "-i", str(lab3.inventory_path), "all", "-m", "ping", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("lab1", "lab2", "lab3"):
        assert f"{name} | SUCCESS" in result.stdout
    assert result.stdout.count("ping: pong") == 3  # ansible.cfg: YAML results


@pytest.mark.lab
def test_inventory_keeps_host_key_checking_on(lab3):
    text = lab3.inventory_path.read_text()
    assert "StrictHostKeyChecking=yes" in text
    assert f"UserKnownHostsFile={lab3.known_hosts_path}" in text
    assert "ansible_python_interpreter: /usr/bin/python3" in text
    # A host whose key is not the recorded one is refused.
    other = Lab(lab3.dir)
    host = other.hosts()[0]
    bad = subprocess.run(
        ["ssh", "-i", str(lab3.key_path), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", "UserKnownHostsFile=/dev/null", f"root@{host.address}", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "Host key verification failed" in bad.stderr


@pytest.mark.lab
def test_lab_ssh_leaves_the_callers_stdin_alone(lab3):
    """ssh turns a non-tty stdin it inherits non-blocking while it runs; an ansible command
    started meanwhile from the same process then refuses to start (a CI run's systemd lab)."""
    flips, running = [], threading.Event()
    running.set()

    def watch():
        while running.is_set():
            if not os.get_blocking(0):
                flips.append(time.monotonic())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert lab3.ssh("lab1", "sleep 1; echo done").stdout.strip() == "done"
    finally:
        running.clear()
        watcher.join()
    assert flips == []


@pytest.mark.lab
def test_each_host_has_its_own_hostname(lab3):
    names = [lab3.ssh(h.name, "hostname").stdout.strip() for h in lab3.hosts()]
    assert names == ["lab1", "lab2", "lab3"]
    assert socket.gethostname() not in names


@pytest.mark.lab
def test_files_written_on_a_host_stay_on_that_host(lab3):
    marker = f"marker-{os.getpid()}"
    wrote = lab3.ssh("lab1", f"mkdir -p /etc/saveos && echo {marker} > /etc/saveos/lab-test")
    assert wrote.returncode == 0, wrote.stderr
    assert lab3.ssh("lab1", "cat /etc/saveos/lab-test").stdout.strip() == marker
    assert lab3.ssh("lab2", "test -e /etc/saveos/lab-test").returncode == 1
    assert not Path("/etc/saveos/lab-test").exists()
    # Hosts cannot see the lab dir: neither the client key nor the other hosts' layers.
    assert lab3.ssh("lab2", f"ls -A {lab3.dir}").stdout.strip() == ""
    assert lab3.ssh("lab2", f"test -e {lab3.key_path}").returncode == 1


@pytest.mark.lab
def test_hosts_start_with_an_empty_root_home(lab3):
    """The controller's /root (SSH keys, default SAVEOS_DATA_DIR) is not visible on hosts."""
    with tempfile.NamedTemporaryFile(dir=Path.home(), prefix="saveos-lab-secret-") as secret:
        assert lab3.ssh("lab1", f"test -e {secret.name}").returncode == 1
    assert lab3.ssh("lab1", "test -d /usr/lib/python3 && test -e /etc/passwd").returncode == 0


@pytest.mark.lab
def test_up_again_is_idempotent(lab3):
    before = lab3.hosts()
    assert Lab(lab3.dir, net=lab_net()).up(3) == lab3.inventory_path
    assert lab3.hosts() == before
    assert all(s.running and s.answers for s in lab3.status())


@pytest.mark.lab
def test_up_on_a_running_lab_with_another_net_is_refused(lab3):
    other_net = "127.0.2" if lab_net() != "127.0.2" else "127.0.3"
    with pytest.raises(SaveOSError, match="already runs"):
        Lab(lab3.dir, net=other_net).up(3)


@pytest.mark.lab
def test_address_in_use_is_reported(tmp_path):
    require_root()
    port = free_port()
    with socket.socket() as busy:
        busy.bind((f"{lab_net()}.11", port))
        busy.listen()
        with pytest.raises(SaveOSError, match="already in use"):
            Lab(tmp_path / "lab", net=lab_net(), port=port).up(1)
    assert not (tmp_path / "lab").exists()


@pytest.mark.lab
def test_missing_sshd_names_the_package(tmp_path, monkeypatch):
    require_root()
    monkeypatch.setattr(lab_module, "SSHD", tmp_path / "no-such-sshd")
    with pytest.raises(SaveOSError) as err:
        Lab(tmp_path / "lab", net=lab_net()).up(1)
    assert "apt-get install openssh-server" in err.value.hint
    assert not (tmp_path / "lab").exists()


@pytest.mark.lab
def test_cli_up_status_down_leaves_nothing_behind(tmp_path):
    """Through the CLI, on its own port so it can run next to lab3."""
    require_root()
    lab_dir = tmp_path / "lab"
    port = str(free_port())
    up = cli("lab", "up", "--hosts", "2", "--dir", str(lab_dir), "--net", lab_net(), "--port", port)
    assert up.returncode == 0, up.stderr
    assert str(lab_dir / "inventory.yml") in up.stdout
    assert "all -m ping" in up.stdout
    lab = Lab(lab_dir)
    hosts = lab.hosts()
    # A daemon started on a host (as Ansible would) must not outlive the lab.
    daemon = lab.ssh("lab1", "setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!")
    assert daemon.returncode == 0, daemon.stderr
    status = cli("lab", "status", "--dir", str(lab_dir), "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert [(r["name"], r["running"], r["answers"]) for r in rows] == [
        ("lab1", True, True),
        ("lab2", True, True),
    ]
    host_ns = os.readlink(f"/proc/{hosts[0].sshd_pid}/ns/pid")
    sleepers = [pid for pid in pids_of(b"sleep\x003600\x00") if pid_ns(pid) == host_ns]
    assert len(sleepers) == 1
    assert mounts_mentioning(lab_dir), "the detector must see the lab's mounts while it runs"

    # One host gone → status says so with exit code 2.
    os.kill(hosts[1].sshd_pid, 15)
    for _ in range(500):
        if not running(hosts[1].sshd_pid):
            break
        time.sleep(0.01)
    status = cli("lab", "status", "--dir", str(lab_dir))
    assert status.returncode == 2
    assert "no answer" in status.stdout
    # `up` again restarts the dead host and keeps the live one.
    again = cli(
        "lab", "up", "--hosts", "2", "--dir", str(lab_dir), "--net", lab_net(), "--port", port
    )
    assert again.returncode == 0, again.stderr
    restarted = Lab(lab_dir).hosts()
    assert restarted[0] == hosts[0]
    assert restarted[1].sshd_pid != hosts[1].sshd_pid
    assert cli("lab", "status", "--dir", str(lab_dir)).returncode == 0
    hosts = restarted

    down = cli("lab", "down", "--dir", str(lab_dir))
    assert down.returncode == 0, down.stderr
    for h in hosts:
        assert not running(h.sshd_pid)
        assert not running(h.unshare_pid)
    assert not any(running(pid) for pid in sleepers)
    assert mounts_mentioning(lab_dir) == []
    assert not lab_dir.exists()
    again = cli("lab", "down", "--dir", str(lab_dir))
    assert again.returncode == 0
    assert "nothing to do" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hosts", "0"], "--hosts must be between 1 and 200 (got 0)"),
        (["--hosts", "300"], "--hosts must be between 1 and 200 (got 300)"),
        (["--net", "10.0.0"], "--net must be a loopback /24 prefix like 127.0.0 (got '10.0.0')"),
        (["--net", "127.0.0.1"], "--net must be a loopback /24 prefix"),
        (["--port", "70000"], "--port must be between 1 and 65535"),
    ],
)
def test_cli_rejects_bad_input_with_one_clear_line(tmp_path, args, message):
    result = cli("lab", "up", "--dir", str(tmp_path / "lab"), *args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    first, *rest = result.stderr.splitlines()
    assert first.startswith(f"error: {message}")
    assert len(rest) <= 1  # at most a hint line
    assert not (tmp_path / "lab").exists()


@pytest.mark.parametrize("command", ["up", "down"])
def test_cli_refuses_to_run_without_root(tmp_path, command):
    # A fresh user namespace makes this process uid 65534 with no privileges over the machine.
    result = cli("lab", command, "--dir", str(tmp_path / "lab"), prefix=("unshare", "--user"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: saveos lab needs root")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lab").exists()
