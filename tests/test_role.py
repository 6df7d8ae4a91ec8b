"""The saveos_agent role and the fleet playbooks, run with plain ansible-playbook.

The unit-file test renders the role's systemd templates and runs `systemd-analyze verify` on them.
The lab test deploys to three real SSH lab hosts against the API on PostgreSQL and walks the
lifecycle: first deploy (plus an unreachable 4th host), idempotent re-deploy, check mode,
backup, uninstall and re-deploy onto the old repository, with no secret in any -vvv output.

Over 400 lines on purpose: test_fleet_lifecycle is one walk through one lab's life, each step
on what the ones before left (about 280 lines); splitting it would deploy the lab again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml
from ansible_support import ansible_env, explain, playbook, recap
from conftest import REPO_ROOT, free_port, lab_net

ROLE = REPO_ROOT / "roles" / "saveos_agent"
OWN_WRAPPER = "/opt/site/bin/saveos-agent"  # a host's own agent command, from its inventory
UNITS = [
    "saveos-agent-heartbeat.service",
    "saveos-agent-heartbeat.timer",
    "saveos-agent-backup.service",
    "saveos-agent-backup.timer",
    "saveos-agent-jobs.service",
    "saveos-agent-check.service",
    "saveos-agent-check.timer",
    "saveos-agent-drill.service",
    "saveos-agent-drill.timer",
]


# -- systemd units -------------------------------------------------------------------------------

RENDER_PLAY = """\
- hosts: all
  gather_facts: false
  vars_files:
    - {role}/vars/main.yml
  tasks:
    # It works out every host's slots (the timers' calendars); in check mode it writes nothing.
    - ansible.builtin.include_role:
        name: saveos_agent
        tasks_from: controller.yml
        apply:
          check_mode: true
    - ansible.builtin.template:
        src: "{role}/templates/{{{{ item }}}}.j2"
        dest: "{{{{ out }}}}/{{{{ inventory_hostname }}}}/{{{{ item }}}}"
        mode: "0644"
      loop: "{{{{ saveos_agent_systemd_units }}}}"
"""


def render_units(tmp_path: Path, hosts: dict[str, dict]) -> Path:
    """Render the unit templates for each host; the role defaults sit at inventory precedence."""
    out = tmp_path / "out"
    for host in hosts:
        (out / host).mkdir(parents=True, exist_ok=True)
    local = {"ansible_connection": "local", "ansible_python_interpreter": shutil.which("python3")}
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    escrow = {"saveos_agent_escrow_dir": str(tmp_path / "escrow")}
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump(
            {"all": {"vars": {**defaults, **local, **escrow}, "hosts": hosts}},
            default_flow_style=False,
        )
    )
    play = tmp_path / "render.yml"
    play.write_text(RENDER_PLAY.format(role=ROLE))
    result = playbook(inventory, play, "-e", f"out={out}", timeout=120)
    assert result.returncode == 0, explain(result)
    return out


def systemd_verify(tmp_path: Path, unit_dir: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` in a scratch root that has the system's units and the wrapper."""
    root = tmp_path / f"root-{unit_dir.name}"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    wrapper = root / "usr/local/bin/saveos-agent"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/bin/sh\n")
    wrapper.chmod(0o755)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit_dir / unit, target / unit)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *(str(target / u) for u in UNITS)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_units_verify_and_jitter_is_deterministic(tmp_path):
    fleet = ["web1", "web2", "db1"]
    six_hours = {"saveos_agent_backup_interval_s": 21600}
    half_hour = {"saveos_agent_backup_interval_s": 1800}
    out = render_units(
        tmp_path,
        {
            **dict.fromkeys(fleet, {}),
            "broken": {"saveos_agent_backup_on_calendar": "nope"},
            "db6h": six_hours,
            "db30m": half_hour,
            "db90m": {"saveos_agent_backup_interval_s": 5400},
            "fixed": {**six_hours, "saveos_agent_backup_on_calendar": "Sun *-*-* 04:00:00"},
            "own": {"saveos_agent_wrapper": OWN_WRAPPER},  # an inventory value beats the default
        },
    )
    for host in [*fleet, "db6h", "db30m", "db90m", "fixed"]:
        result = systemd_verify(tmp_path, out / host)
        # verify exits 0 on some warnings: any stderr output counts as a failure.
        assert result.returncode == 0 and result.stderr == "", result.stderr

    calendars = {
        host: re.search(
            r"^OnCalendar=(.+)$", (out / host / "saveos-agent-backup.timer").read_text(), re.M
        ).group(1)
        for host in [*fleet, "broken"]
    }
    # Inside the default window 01:00-03:59 at a minute fixed by sha1(inventory name).
    for host in fleet:
        minute = 60 + int(hashlib.sha1(host.encode()).hexdigest()[:8], 16) % 180
        assert calendars[host] == f"*-*-* {minute // 60:02d}:{minute % 60:02d}:00 UTC", calendars
    assert len({calendars[h] for h in fleet}) == 3, calendars

    # The calendar follows the interval: 6 h is four slots a day at the host's minute.
    def timer_calendars(host: str, unit: str = "backup") -> list[str]:
        text = (out / host / f"saveos-agent-{unit}.timer").read_text()
        return re.findall(r"^OnCalendar=(.+)$", text, re.M)

    minute = 60 + int(hashlib.sha1(b"db6h").hexdigest()[:8], 16) % 180
    hours = ",".join(f"{(minute // 60 + 6 * k) % 24:02d}" for k in range(4))
    assert timer_calendars("db6h") == [f"*-*-* {hours}:{minute % 60:02d}:00 UTC"]
    minute = 60 + int(hashlib.sha1(b"db30m").hexdigest()[:8], 16) % 180
    assert timer_calendars("db30m") == [f"*-*-* *:{minute % 30:02d}/30:00 UTC"]
    assert timer_calendars("fixed") == ["Sun *-*-* 04:00:00"]  # on_calendar overrides
    minute = 60 + int(hashlib.sha1(b"db90m").hexdigest()[:8], 16) % 180
    assert timer_calendars("db90m") == [
        f"*-*-* {m // 60:02d}:{m % 60:02d}:00 UTC" for m in range(minute % 90, 1440, 90)
    ]  # 90 min: sixteen slots, one line each
    # Checks and drills weekly (the default) on the host's own weekday and minute.
    weekday = int(hashlib.sha1(b"web1").hexdigest()[8:16], 16) % 7
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    minute = 60 + int(hashlib.sha1(b"web1").hexdigest()[:8], 16) % 180
    check_minute, drill_minute = (minute + 180) % 1440, (minute + 120) % 1440
    assert timer_calendars("web1", "check") == [
        f"{days[weekday]} *-*-* {check_minute // 60:02d}:{check_minute % 60:02d}:00 UTC"
    ]
    assert timer_calendars("web1", "drill") == [
        f"{days[(weekday + 3) % 7]} *-*-* {drill_minute // 60:02d}:{drill_minute % 60:02d}:00 UTC"
    ]

    for host, wrapper in (("web1", "/usr/local/bin/saveos-agent"), ("own", OWN_WRAPPER)):
        for unit in ("backup", "check", "drill", "heartbeat", "jobs"):
            text = (out / host / f"saveos-agent-{unit}.service").read_text()
            assert re.search(rf"^ExecStart={re.escape(wrapper)} ", text, re.M), (host, text)

    # The check can fail: a broken calendar expression is reported on stderr.
    assert calendars["broken"] == "nope"
    assert systemd_verify(tmp_path, out / "broken").stderr != ""


AGENT_PATH_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.import_tasks: {repo}/playbooks/tasks/agent_path.yml
    - ansible.builtin.copy:
        content: "{{{{ _saveos_agent }}}}"
        dest: "{{{{ out }}}}/{{{{ inventory_hostname }}}}"
        mode: "0644"
"""


def test_the_playbooks_take_the_wrapper_from_the_inventory_else_the_role_default(tmp_path):
    """The playbooks' agent command (playbooks/tasks/agent_path.yml): a host's inventory value,
    else the role's default read from its defaults/main.yml, and only then: -vvvv logs each
    file lookup, so exactly one (the host without a value's) may show."""
    plays = tmp_path / "playbooks"  # beside a roles/ as in the repository: playbook_dir/../roles
    plays.mkdir()
    (tmp_path / "roles").symlink_to(REPO_ROOT / "roles")
    play = plays / "agent_path.yml"
    play.write_text(AGENT_PATH_PLAY.format(repo=REPO_ROOT))
    local = {"ansible_connection": "local", "ansible_python_interpreter": shutil.which("python3")}
    hosts = {"own": {"saveos_agent_wrapper": OWN_WRAPPER}, "plain": {}}
    inventory = tmp_path / "inv.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": local, "hosts": hosts}}))
    out = tmp_path / "out"
    out.mkdir()
    result = playbook(inventory, play, "-vvvv", "-e", f"out={out}", timeout=120)
    assert result.returncode == 0, explain(result)
    assert (out / "own").read_text() == OWN_WRAPPER
    assert (out / "plain").read_text() == "/usr/local/bin/saveos-agent"
    assert result.stdout.count("File lookup using") == 1, explain(result)


# -- databases' credentials files -----------------------------------------------------------------

CREDENTIALS_PLAY = """\
- hosts: all
  gather_facts: false
  vars_files:
    - {role}/vars/main.yml
  tasks:
    - ansible.builtin.import_tasks: {role}/tasks/databases.yml
"""
# What broke lab2's dump on the acceptance fleet (a lone " and a trailing \), and the rest of
# what an option file or a pgpass line treats specially.
AWKWARD_PASSWORDS = ['db-1:"\\', 'a\\"q', "two\\\\", "x#y z'$`;=", "p:w\\:d", "\u00e9t\u00e9"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the credentials files are root's")
@pytest.mark.skipif(not shutil.which("my_print_defaults"), reason="no MariaDB client installed")
def test_credentials_files_hold_each_password_exactly(tmp_path):
    """The role writes each password so that the client's own parser reads it back unchanged:
    MariaDB's (my_print_defaults reads an option file as mariadb-dump does) and the pgpass
    rule (backslash and colon escaped), with the passwords taken from the environment."""
    env_ref = "{{{{ lookup('ansible.builtin.env', 'T22_PW{}') }}}}"
    databases = [
        {"type": kind, "name": f"{kind[:2]}{i}", "user": "u", "password": env_ref.format(i)}
        for i in range(len(AWKWARD_PASSWORDS))
        for kind in ("mariadb", "postgresql")
    ]
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    local = {"ansible_connection": "local", "ansible_python_interpreter": shutil.which("python3")}
    config_dir = tmp_path / "etc"
    host_vars = {"saveos_agent_config_dir": str(config_dir), "saveos_agent_databases": databases}
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump({"all": {"vars": {**defaults, **local}, "hosts": {"h": host_vars}}})
    )
    play = tmp_path / "credentials.yml"
    play.write_text(CREDENTIALS_PLAY.format(role=ROLE))
    passwords = {f"T22_PW{i}": pw for i, pw in enumerate(AWKWARD_PASSWORDS)}
    result = playbook(inventory, play, env=ansible_env(passwords), timeout=120)
    assert result.returncode == 0, explain(result)
    assert secrets_in(result.stdout + result.stderr, passwords) == []
    for i, password in enumerate(AWKWARD_PASSWORDS):
        option_file = config_dir / "databases" / f"mariadb-ma{i}.cnf"
        assert option_file.stat().st_mode & 0o777 == 0o600
        read = subprocess.run(
            ["my_print_defaults", f"--defaults-extra-file={option_file}", "client"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert f"--password={password}" in read.stdout.splitlines(), (password, read.stdout)
        pgpass = (config_dir / "databases" / f"postgresql-po{i}.pgpass").read_text()
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        assert pgpass == f"*:*:*:*:{escaped}\n", (password, pgpass)


# -- the fleet in the lab ------------------------------------------------------------------------


def host_sh(lab, host: str, command: str) -> subprocess.CompletedProcess:
    return lab.ssh(host, command, timeout=120)


def fleet_inventory(lab, tmp_path: Path, dead_host: bool) -> Path:
    """The lab's inventory plus test group vars, and optionally a 4th host nobody listens on."""
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    group = inventory["all"]["children"]["lab"]
    group["vars"] = {
        "saveos_agent_sources": ["/etc/os-release", "/etc/debian_version"],
        "saveos_agent_excludes": ["*.tmp"],
        "saveos_agent_heartbeat_interval_s": 10,
        "saveos_agent_labels": {"env": "lab"},
    }
    if dead_host:
        template = next(iter(group["hosts"].values()))
        group["hosts"]["lab4"] = dict(
            template, ansible_host=f"{lab_net()}.250", ansible_port=free_port()
        )
    path = tmp_path / ("inventory-4.yml" if dead_host else "inventory.yml")
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def secrets_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


@pytest.mark.lab
@pytest.mark.pg
@pytest.mark.borg
def test_fleet_lifecycle(lab3, api_server_pg, tmp_path):
    api = api_server_pg
    hosts = ["lab1", "lab2", "lab3"]
    escrow = tmp_path / "escrow"
    env = ansible_env(
        {
            "SAVEOS_API_URL": api.url,
            "SAVEOS_ADMIN_TOKEN": api.admin_token,
            "SAVEOS_ESCROW_DIR": str(escrow),
        }
    )
    inventory = fleet_inventory(lab3, tmp_path, dead_host=False)
    inventory4 = fleet_inventory(lab3, tmp_path, dead_host=True)
    outputs: list[str] = []

    def run(name: str, inv: Path, *args: str) -> subprocess.CompletedProcess:
        result = playbook(inv, f"playbooks/{name}", *args, env=env, timeout=600)
        outputs.append(result.stdout + result.stderr)
        return result

    # Check mode on a host never deployed: no failure, nothing written there or in the escrow.
    dry = run("deploy.yml", inventory, "--check", "--diff", "--limit", "lab1")
    assert dry.returncode == 0, explain(dry)
    assert recap(dry)["lab1"]["failed"] == 0
    assert host_sh(lab3, "lab1", "test -e /etc/saveos || test -e /opt/saveos").returncode == 1
    assert not escrow.exists()
    assert httpx.get(f"{api.url}/api/v1/agents", headers=api.admin_headers()).json()["agents"] == []

    # First deploy, at -vvv, with a 4th host that does not answer: the 3 others converge.
    first = run("deploy.yml", inventory4, "-vvv")
    rows = recap(first)
    assert first.returncode == 4, explain(first)  # 4: some host unreachable
    assert rows["lab4"]["unreachable"] == 1
    for host in hosts:
        assert rows[host]["failed"] == 0 and rows[host]["unreachable"] == 0, explain(first)
        assert rows[host]["changed"] > 0
    # New hosts: provisioned first, then one host call each (converge.yml never included).
    assert "/tasks/new_hosts.yml for " in first.stdout, explain(first)
    assert "/tasks/converge.yml for " not in first.stdout, explain(first)

    # On each host: files private, daemon alive, repository initialised and encrypted.
    for host in hosts:
        modes = host_sh(
            lab3, host, "stat -c '%n %a %U' /etc/saveos /etc/saveos/agent.json "
            "/etc/saveos/token /etc/saveos/passphrase /var/lib/saveos/repo/config",
        )  # fmt: skip
        assert modes.returncode == 0, modes.stderr
        perms = dict(line.split(" ", 1) for line in modes.stdout.splitlines())
        assert perms["/etc/saveos"] == "700 root"
        for name in ("agent.json", "token", "passphrase"):
            assert perms[f"/etc/saveos/{name}"] == "600 root", perms
        assert host_sh(lab3, host, "/opt/saveos/supervise status").stdout.strip() == "alive"
        no_pass = host_sh(
            lab3, host, "env -u BORG_PASSPHRASE -u BORG_PASSCOMMAND BORG_PASSPHRASE_FD= "
            "timeout 60 borg info /var/lib/saveos/repo < /dev/null",
        )  # fmt: skip
        assert no_pass.returncode != 0, no_pass.stdout
        with_pass = host_sh(
            lab3, host, "BORG_PASSCOMMAND='cat /etc/saveos/passphrase' "
            "borg info --json /var/lib/saveos/repo",
        )  # fmt: skip
        assert with_pass.returncode == 0, with_pass.stderr
        assert '"mode": "repokey-blake2"' in with_pass.stdout
        config = host_sh(lab3, host, "cat /etc/saveos/agent.json")
        assert '"/etc/debian_version"' in config.stdout
        assert '"busy_wait_s": 3600' in config.stdout

    # The API knows the 3 agents (not the dead one) and has heard from each.
    agents = httpx.get(f"{api.url}/api/v1/agents", headers=api.admin_headers()).json()["agents"]
    assert sorted(a["name"] for a in agents) == hosts
    assert all(a["last_heartbeat"] for a in agents), agents

    # Escrow: 3 passphrases and 3 key exports, private, matching the hosts.
    secrets: dict[str, str] = {"admin token": api.admin_token}
    assert escrow.stat().st_mode & 0o777 == 0o700
    for host in hosts:
        for name in ("passphrase", "key.export"):
            path = escrow / host / name
            assert path.stat().st_mode & 0o777 == 0o600, path
        assert (escrow / host).stat().st_mode & 0o777 == 0o700
        assert "BORG_KEY" in (escrow / host / "key.export").read_text()
        passphrase = (escrow / host / "passphrase").read_text().strip()
        assert len(passphrase) >= 32
        on_host = host_sh(lab3, host, "cat /etc/saveos/passphrase").stdout.strip()
        assert on_host == passphrase
        secrets[f"{host} passphrase"] = passphrase
        secrets[f"{host} key"] = (escrow / host / "key.export").read_text().splitlines()[1]
        token = host_sh(lab3, host, "cat /etc/saveos/token").stdout.strip()
        assert token.startswith("sos_")
        secrets[f"{host} token"] = token
    assert len({v for k, v in secrets.items() if "passphrase" in k}) == 3

    # Second deploy (also -vvv): nothing to change anywhere.
    second = run("deploy.yml", inventory, "-vvv")
    assert second.returncode == 0, explain(second)
    for host, row in recap(second).items():
        assert row["changed"] == 0 and row["failed"] == 0, (host, explain(second))

    # Check mode with diff on the deployed fleet: no change, no failure.
    checked = run("deploy.yml", inventory, "--check", "--diff")
    assert checked.returncode == 0, explain(checked)
    for host, row in recap(checked).items():
        assert row["changed"] == 0 and row["failed"] == 0, (host, explain(checked))

    # Drift, one item of each kind the host module converges, spread over the hosts; the
    # escrow store loses lab3's key export.
    drift = {
        "lab1": "chmod 0755 /etc/saveos && echo '# edited' >> /usr/local/bin/saveos-agent"
        " && echo garbage > /opt/saveos/saveos-agent.pyz && chown 65534 /etc/saveos/agent.json",
        "lab2": "/opt/saveos/supervise stop && rm /opt/saveos/supervise /etc/saveos/passphrase"
        " && rm -r /var/lib/saveos/spool",
        "lab3": "rm /etc/saveos/token && sed -i 's/busy_wait_s\": 3600/busy_wait_s\": 1/'"
        " /etc/saveos/agent.json",
    }
    for host, command in drift.items():
        assert host_sh(lab3, host, command).returncode == 0, (host, command)
    (escrow / "lab3" / "key.export").unlink()
    expected = {
        "lab1": ["/etc/saveos: mode 0755, want 0700",
                 "/usr/local/bin/saveos-agent: content differs",
                 "/opt/saveos/saveos-agent.pyz: content differs",
                 "/etc/saveos/agent.json: owner nobody"],
        "lab2": ["/opt/saveos/supervise: created", "/etc/saveos/passphrase: created",
                 "/var/lib/saveos/spool: created", "the agent daemon"],
        "lab3": ["/etc/saveos/token: provisioned", "/etc/saveos/agent.json: content differs",
                 "/var/lib/saveos/repo: key exported into the escrow store"],
    }  # fmt: skip

    # Check mode names every drifted item (the wrapper's change as a diff) and repairs none.
    dry = run("deploy.yml", inventory, "--check", "--diff", "-v")
    assert dry.returncode == 0, explain(dry)
    for host, row in recap(dry).items():
        assert row["changed"] > 0 and row["failed"] == 0, (host, explain(dry))
    for item in [i for items in expected.values() for i in items]:
        assert item in dry.stdout, (item, explain(dry))
    assert "+# edited" not in dry.stdout and "-# edited" in dry.stdout, explain(dry)
    assert host_sh(lab3, "lab1", "stat -c %a /etc/saveos").stdout.strip() == "755"
    assert host_sh(lab3, "lab2", "test -e /opt/saveos/supervise").returncode == 1
    assert host_sh(lab3, "lab3", "test -e /etc/saveos/token").returncode == 1
    assert not (escrow / "lab3" / "key.export").exists()

    # The real run repairs each item and says so; the next one changes nothing.
    fixed = run("deploy.yml", inventory, "-v")
    assert fixed.returncode == 0, explain(fixed)
    for host, row in recap(fixed).items():
        assert row["changed"] > 0 and row["failed"] == 0, (host, explain(fixed))
    for item in [i for items in expected.values() for i in items]:
        assert item in fixed.stdout, (item, explain(fixed))
    state = host_sh(
        lab3, "lab1", "stat -c '%a %U' /etc/saveos /etc/saveos/agent.json; "
        "grep -c edited /usr/local/bin/saveos-agent; sha256sum /opt/saveos/saveos-agent.pyz",
    )  # fmt: skip
    lines = state.stdout.splitlines()
    assert lines[:3] == ["700 root", "600 root", "0"], state.stdout
    assert (
        lines[3].split()[0]
        == hashlib.sha256(Path(REPO_ROOT / "dist/saveos-agent.pyz").read_bytes()).hexdigest()
    )
    assert host_sh(lab3, "lab2", "/opt/saveos/supervise status").stdout.strip() == "alive"
    assert (
        host_sh(lab3, "lab2", "cat /etc/saveos/passphrase").stdout.strip()
        == secrets["lab2 passphrase"]
    )
    assert host_sh(lab3, "lab2", "stat -c %a /var/lib/saveos/spool").stdout.strip() == "700"
    assert '"busy_wait_s": 3600' in host_sh(lab3, "lab3", "cat /etc/saveos/agent.json").stdout
    lab3_token = host_sh(lab3, "lab3", "cat /etc/saveos/token").stdout.strip()
    assert lab3_token.startswith("sos_") and lab3_token != secrets["lab3 token"]
    secrets["lab3 repaired token"] = lab3_token
    key = escrow / "lab3" / "key.export"
    assert key.stat().st_mode & 0o777 == 0o600 and "BORG_KEY" in key.read_text()
    settled = run("deploy.yml", inventory)
    assert settled.returncode == 0, explain(settled)
    for host, row in recap(settled).items():
        assert row["changed"] == 0 and row["failed"] == 0, (host, explain(settled))

    # Backup now: each host reports a snapshot the API knows by the archive name.
    backup = run("backup.yml", inventory)
    assert backup.returncode == 0, explain(backup)
    archives = dict(re.findall(r"ok: \[(lab\d)\] =>\s*\n\s*msg: ok archive=(\S+)", backup.stdout))
    assert sorted(archives) == hosts, explain(backup)
    for agent in agents:
        snaps = httpx.get(
            f"{api.url}/api/v1/agents/{agent['id']}/snapshots", headers=api.admin_headers()
        ).json()["snapshots"]
        assert archives[agent["name"]] in {s["archive"] for s in snaps}

    # A revoked token is noticed from the host and replaced; the other hosts are not touched.
    lab1 = next(a for a in agents if a["name"] == "lab1")
    revoke = httpx.post(
        f"{api.url}/api/v1/agents/{lab1['id']}/tokens/revoke", headers=api.admin_headers()
    )
    assert revoke.status_code == 200 and revoke.json()["revoked"] >= 1
    repaired = run("deploy.yml", inventory, "--limit", "lab1")
    assert repaired.returncode == 0, explain(repaired)
    assert recap(repaired)["lab1"]["changed"] > 0
    new_token = host_sh(lab3, "lab1", "cat /etc/saveos/token").stdout.strip()
    assert new_token != secrets["lab1 token"]
    me = httpx.get(f"{api.url}/api/v1/agents/me", headers={"Authorization": f"Bearer {new_token}"})
    assert me.status_code == 200 and me.json()["id"] == lab1["id"]
    secrets["lab1 repaired token"] = new_token

    repo_ids = {}
    for host in hosts:
        info = host_sh(
            lab3, host, "BORG_PASSCOMMAND='cat /etc/saveos/passphrase' "
            "borg info --json /var/lib/saveos/repo",
        )  # fmt: skip
        repo_ids[host] = re.search(r'"id": "([0-9a-f]{64})"', info.stdout).group(1)

    # A compromised lab1 names lab2 in its own agent.json: uninstalling lab1 decommissions the
    # API's record of lab1 (looked up from the controller), never the agent the host names.
    def decommissioned() -> dict[str, bool]:
        agents = httpx.get(f"{api.url}/api/v1/agents", headers=api.admin_headers()).json()
        return {a["name"]: bool(a["decommissioned_at"]) for a in agents["agents"]}

    lab2_id = httpx.get(
        f"{api.url}/api/v1/agents/by-name/lab2", headers=api.admin_headers()
    ).json()["id"]
    forged = host_sh(
        lab3, "lab1", "python3 -c \"import json; p='/etc/saveos/agent.json'; c=json.load(open(p));"
        f" c['agent_id']={lab2_id}; open(p, 'w').write(json.dumps(c))\"",
    )  # fmt: skip
    assert forged.returncode == 0, forged.stderr
    first = run("uninstall.yml", inventory, "--limit", "lab1")
    assert first.returncode == 0, explain(first)
    assert decommissioned() == {"lab1": True, "lab2": False, "lab3": False}

    # Uninstall: agent, schedule and config gone; repository and escrow kept.
    removed = run("uninstall.yml", inventory)
    assert removed.returncode == 0, explain(removed)
    for host in hosts:
        left = host_sh(
            lab3, host, "ls /etc/saveos /opt/saveos /usr/local/bin/saveos-agent 2>&1; "
            "pgrep -f 'saveos-agent[.]pyz' || echo no-daemon; ls /var/lib/saveos/repo/config",
        )  # fmt: skip
        assert "no-daemon" in left.stdout
        assert left.stdout.count("No such file or directory") == 3, left.stdout
        assert "/var/lib/saveos/repo/config" in left.stdout
        assert (escrow / host / "passphrase").exists()
    listed = httpx.get(f"{api.url}/api/v1/agents", headers=api.admin_headers()).json()["agents"]
    assert all(a["decommissioned_at"] for a in listed), listed

    # Provisioning with a wrong admin token fails with a clear message, and writes no token.
    wrong = {**env, "SAVEOS_ADMIN_TOKEN": "adm_wrong"}
    refused = playbook(inventory, "playbooks/deploy.yml", "--limit", "lab1", env=wrong)
    outputs.append(refused.stdout + refused.stderr)
    assert refused.returncode == 2, explain(refused)
    assert "refused to provision lab1: HTTP 401" in refused.stdout, explain(refused)
    assert host_sh(lab3, "lab1", "test -e /etc/saveos/token").returncode == 1

    # Deploy again: the old repository is reused (same id, its archive still there).
    again = run("deploy.yml", inventory)
    assert again.returncode == 0, explain(again)
    for host in hosts:
        listing = host_sh(
            lab3, host, "BORG_PASSCOMMAND='cat /etc/saveos/passphrase' "
            "borg info --json /var/lib/saveos/repo && "
            "BORG_PASSCOMMAND='cat /etc/saveos/passphrase' borg list --short /var/lib/saveos/repo",
        )  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        assert repo_ids[host] in listing.stdout
        assert archives[host] in listing.stdout
        assert host_sh(lab3, host, "/opt/saveos/supervise status").stdout.strip() == "alive"
    revived = httpx.get(f"{api.url}/api/v1/agents", headers=api.admin_headers()).json()["agents"]
    assert sorted(a["name"] for a in revived) == hosts  # the same 3 agents, revived
    assert not any(a["decommissioned_at"] for a in revived), revived
    for host in hosts:
        secrets[f"{host} new token"] = host_sh(lab3, host, "cat /etc/saveos/token").stdout.strip()

    # An empty escrow store never leads to a new passphrase over the host's: the deploy stops,
    # names the host, and the host's passphrase is untouched.
    shutil.move(escrow / "lab2", tmp_path / "lab2-escrow")
    lost = run("deploy.yml", inventory, "--limit", "lab2")
    assert lost.returncode == 2, explain(lost)
    assert "lab2 already has a repository passphrase" in lost.stdout, explain(lost)
    on_host = host_sh(lab3, "lab2", "cat /etc/saveos/passphrase").stdout.strip()
    assert on_host == secrets["lab2 passphrase"]
    assert not (escrow / "lab2" / "passphrase").exists()
    shutil.rmtree(escrow / "lab2", ignore_errors=True)
    shutil.move(tmp_path / "lab2-escrow", escrow / "lab2")

    # No token, passphrase or admin token in anything ansible printed, -vvv included.
    everything = "\n".join(outputs)
    assert "ESTABLISH SSH CONNECTION" in outputs[1]  # the first deploy really was -vvv
    assert secrets_in(everything, secrets) == []


def test_playbooks_find_the_role_from_anywhere(tmp_path):
    """`ansible-playbook /path/playbooks/deploy.yml` parses from another cwd (playbooks/roles)."""
    result = playbook(
        "localhost,", REPO_ROOT / "playbooks/site.yml", REPO_ROOT / "playbooks/uninstall.yml",
        "--syntax-check", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    bad = textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          roles: [saveos_agent_missing]
        """)
    (tmp_path / "bad.yml").write_text(bad)
    result = playbook(
        "localhost,", tmp_path / "bad.yml", "--syntax-check", cwd=tmp_path, timeout=120
    )
    assert result.returncode != 0
