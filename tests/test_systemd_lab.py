"""The path real servers take (issue 17), on PostgreSQL: a systemd lab host (lab2: PID 1 is
systemd, booted by systemd-nspawn) beside a plain one (lab1: the supervised daemon), deployed
from the installed saveos.fleet collection through ansible-runner (what AWX does).

In file order: the host boots; the deploy enabled the timers at the host's slots; the heartbeat
timer fires on its own; a backup fires from its timer; heartbeats go on (never silent) while a
backup outlasts three heartbeat intervals, on both schedulers; scheduled check and drill; every
command (check, drill, agents rotate, their playbooks); a drill that fails for real turns the
host failing; uninstall removes every unit; lab down stops the systemd host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from conftest import PG_ADMIN_URL, REPO_ROOT, ApiServer, _pg_exec, lab_net, require_root

from saveos_cli import lab_systemd
from saveos_cli.lab import Lab, _proc_alive

pytestmark = [pytest.mark.lab, pytest.mark.pg]

LAB_PORT = int(os.environ.get("SAVEOS_SYSTEMD_LAB_PORT", "2217"))
SUPERVISED, SYSTEMD = "lab1", "lab2"
HOSTS = (SUPERVISED, SYSTEMD)
HB = 5  # heartbeat interval: silent after 15 s
SOURCE = "/srv/data"
VENV_BIN = Path(sys.executable).parent
TIMERS = (
    "saveos-agent-heartbeat.timer",
    "saveos-agent-backup.timer",
    "saveos-agent-check.timer",
    "saveos-agent-drill.timer",
)


class Env:
    def __init__(self, work: Path):
        self.work = work
        self.db_name = f"saveos_sd_{uuid.uuid4().hex[:10]}"
        self.db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.api = ApiServer(self.db_url, work / "api")
        self.lab = Lab(work / "lab", net=lab_net(), port=LAB_PORT)
        self.inventory = work / "inventory.yml"
        self.escrow = work / "escrow"
        self.engine: sa.Engine | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            SAVEOS_API_URL=self.api.url,
            SAVEOS_ADMIN_TOKEN=self.api.admin_token,
            SAVEOS_DATA_DIR=str(self.work / "data"),
            SAVEOS_ESCROW_DIR=str(self.escrow),
            ANSIBLE_NOCOLOR="1",
            NO_COLOR="1",
            COLUMNS="250",
        )
        return env

    def sh(self, host: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.lab.ssh(host, command, timeout=timeout)

    def ok(self, host: str, command: str, timeout: float = 300) -> str:
        r = self.sh(host, command, timeout)
        assert r.returncode == 0, f"{host}: {command}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def saveos(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "saveos_cli.app", *args],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def playbook(self, name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ansible-playbook", "-i", str(self.inventory), f"playbooks/{name}", *args],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    def sql(self, query: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(sa.text(query), params).all()

    def count(self, table: str, host: str, where: str = "true") -> int:
        return self.sql(
            f"SELECT count(*) FROM {table} t JOIN agents a ON a.id = t.agent_id "
            f"WHERE a.name = :host AND {where}",
            host=host,
        )[0][0]

    def beats(self, host: str) -> int:
        return self.sql("SELECT heartbeat_count FROM agents WHERE name = :h", h=host)[0][0]

    def fleet(self) -> dict[str, dict]:
        r = httpx.get(
            self.api.url + "/api/v1/fleet/status", headers=self.api.admin_headers(), timeout=10
        )
        assert r.status_code == 200, r.text
        return {a["name"]: a for a in r.json()["agents"]}


def _deploy_from_the_collection(env: Env, verbosity: int = 0):
    """Build and install saveos.fleet offline (once), then run a project playbook that imports
    its deploy playbook through ansible-runner, as an AWX job does. The runner and its stdout."""
    import ansible_runner

    dist, collections = env.work / "dist", env.work / "collections"
    project = env.work / "project"
    if not project.exists():
        build = subprocess.run(
            [sys.executable, str(REPO_ROOT / "collections/build.py"),
             "--work", str(env.work / "assemble"), "--out", str(dist)],
            capture_output=True, text=True, cwd=env.work, check=False,
        )  # fmt: skip
        assert build.returncode == 0, build.stdout + build.stderr
        install = subprocess.run(
            [str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline",
             "-p", str(collections), build.stdout.strip()],
            capture_output=True, text=True, cwd=env.work, check=False, env=env.env,
        )  # fmt: skip
        assert install.returncode == 0, install.stdout + install.stderr
        project.mkdir()
        (project / "deploy.yml").write_text("---\n- import_playbook: saveos.fleet.deploy\n")
    private = env.work / f"runner-{uuid.uuid4().hex[:8]}"
    private.mkdir()
    runner = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(project),
        playbook="deploy.yml",
        inventory=str(env.inventory),
        envvars={
            **{k: env.env[k] for k in ("PATH", "SAVEOS_API_URL", "SAVEOS_DATA_DIR")},
            "SAVEOS_ADMIN_TOKEN": env.api.admin_token,
            "SAVEOS_ESCROW_DIR": str(env.escrow),
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(env.work / "no-roles"),  # only the collection's role
        },
        quiet=True,
        suppress_env_files=True,
        verbosity=verbosity,
    )
    out = (private / "artifacts").glob("*/stdout")
    text = "".join(p.read_text(errors="replace") for p in out)
    assert runner.status == "successful", text[-6000:]
    assert "saveos.fleet.saveos_agent" in text  # the collection's role ran, not the checkout's
    assert set(runner.stats["ok"]) == set(HOSTS), runner.stats
    return runner, text


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    require_root()
    for tool in ("systemd-nspawn", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install systemd-container debootstrap")
    work = tmp_path_factory.mktemp("systemd-lab")
    work.chmod(0o700)
    env = Env(work)
    _pg_exec(f'CREATE DATABASE "{env.db_name}"')
    env.engine = sa.create_engine(env.db_url, pool_size=2)
    try:
        env.api.start()
        env.lab.up(len(HOSTS), systemd=1)
        inventory = yaml.safe_load(env.lab.inventory_path.read_text())
        inventory["all"]["children"]["lab"]["vars"] = {
            "saveos_agent_sources": [SOURCE],
            "saveos_agent_heartbeat_interval_s": HB,
            "saveos_agent_backup_interval_s": 21600,  # four slots a day
            "saveos_agent_lock_wait_s": 120,
            "saveos_agent_drill_count": 50,
        }
        env.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
        for host in HOSTS:
            env.ok(
                host,
                f"mkdir -p {SOURCE} && for i in 1 2 3 4 5; do head -c 20000 /dev/urandom "
                f"> {SOURCE}/f$i; done && echo {host} > {SOURCE}/host",
            )
        _deploy_from_the_collection(env)
        yield env
    finally:
        env.api.stop()
        env.lab.down()
        env.engine.dispose()
        _pg_exec(f'DROP DATABASE IF EXISTS "{env.db_name}" WITH (FORCE)')


def host_minute(name: str) -> int:
    """The backup minute of day the role gives `name` (window 01:00 + 180 min, sha1)."""
    return 60 + int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 180


def wait_for(what: str, predicate, timeout: float = 90, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


# -- the host ------------------------------------------------------------------------------------


def test_the_systemd_host_is_booted_and_isolated(env):
    assert env.ok(SYSTEMD, "cat /proc/1/comm").strip() == "systemd"
    assert env.ok(SYSTEMD, "systemctl is-system-running").strip() == "running"
    assert env.ok(SUPERVISED, "cat /proc/1/comm").strip() != "systemd"
    # Only what a minimal server runs: no apt timers, no getty, nothing else competing.
    services = set(
        env.ok(
            SYSTEMD,
            "systemctl list-units --type=service --state=running --no-legend --plain"
            " | awk '{print $1}'",
        ).split()
    )
    allowed = {"dbus.service", "ssh.service", "systemd-journald.service"}
    allowed |= {"systemd-logind.service", "user@0.service"}
    assert services <= allowed, services
    timers = env.ok(SYSTEMD, "systemctl list-timers --no-legend --plain")
    assert "apt-daily" not in timers and "fstrim" not in timers, timers
    masked = env.ok(SYSTEMD, "systemctl is-enabled " + " ".join(lab_systemd.MASKED) + " || true")
    assert masked.split() == ["masked"] * len(lab_systemd.MASKED), masked
    # sshd listens on the host's own loopback address only.
    address = next(h.address for h in env.lab.hosts() if h.name == SYSTEMD)
    listening = env.ok(SYSTEMD, "cat /etc/ssh/sshd_config.d/00-saveos-lab.conf")
    assert f"ListenAddress {address}:{LAB_PORT}" in listening
    # Its own root: neither the lab dir (client key) nor the controller's /tmp is visible.
    marker = Path("/tmp") / f"saveos-controller-{uuid.uuid4().hex}"
    marker.write_text("controller only")
    try:
        assert env.sh(SYSTEMD, f"test -e {marker} || test -e {env.lab.dir}").returncode == 1
    finally:
        marker.unlink()
    inventory = yaml.safe_load(env.lab.inventory_path.read_text())
    assert list(inventory["all"]["children"]["lab_systemd"]["hosts"]) == [SYSTEMD]
    status = {s.name: s for s in env.lab.status()}
    assert status[SYSTEMD].flavour == "systemd" and status[SYSTEMD].answers


# -- timers --------------------------------------------------------------------------------------


def test_deploy_enabled_the_timers_at_the_hosts_slots(env):
    for timer in TIMERS:
        assert env.ok(SYSTEMD, f"systemctl is-enabled {timer}").strip() == "enabled", timer
        assert env.ok(SYSTEMD, f"systemctl is-active {timer}").strip() == "active", timer
    listed = env.ok(SYSTEMD, "systemctl list-timers --all --no-legend --plain")
    for timer in TIMERS:
        assert timer in listed, listed
    # 6 h: four slots a day at the host's own minute.
    minute = host_minute(SYSTEMD)
    hours = {(minute // 60 + 6 * k) % 24 for k in range(4)}
    calendar = env.ok(SYSTEMD, "systemctl cat saveos-agent-backup.timer")
    expected = ",".join(f"{h:02d}" for h in sorted(hours))
    assert f"OnCalendar=*-*-* {expected}:{minute % 60:02d}:00 UTC" in calendar, calendar
    nxt = env.ok(
        SYSTEMD,
        "TZ=UTC systemctl show -p NextElapseUSecRealtime --value saveos-agent-backup.timer",
    ).strip()
    when = datetime.strptime(nxt, "%a %Y-%m-%d %H:%M:%S %Z")
    assert (when.hour, when.minute) in {(h, minute % 60) for h in hours}, nxt
    assert timedelta(0) < when.replace(tzinfo=UTC) - datetime.now(UTC) <= timedelta(hours=6)
    # The supervised host runs its daemon instead, and has no units.
    assert env.ok(SUPERVISED, "/opt/saveos/supervise status").strip() == "alive"
    assert env.sh(SUPERVISED, "ls /etc/systemd/system/saveos-agent*").returncode != 0


def test_a_redeploy_repairs_an_edited_unit_and_a_stopped_timer(env):
    """The host module rewrites the unit, reloads systemd, enables and starts the timer again,
    and says so item by item; the supervised host, untouched, reports no change."""
    unit = "/etc/systemd/system/saveos-agent-check.service"
    env.ok(SYSTEMD, f"echo '# edited' >> {unit} && systemctl daemon-reload"
                    " && systemctl disable --now saveos-agent-drill.timer")  # fmt: skip
    runner, text = _deploy_from_the_collection(env, verbosity=1)
    for item in (f"{unit}: content differs", "saveos-agent-drill.timer: disabled, enabled",
                 "saveos-agent-drill.timer: inactive, started"):  # fmt: skip
        assert item in text, (item, text[-6000:])
    assert set(runner.stats.get("changed", {})) == {SYSTEMD}, runner.stats
    assert env.ok(SYSTEMD, f"grep -c edited {unit} || true").strip() == "0"
    assert (
        env.ok(
            SYSTEMD, "systemctl show -p NeedDaemonReload --value saveos-agent-check.service"
        ).strip()
        == "no"
    )
    for verb, want in (("is-enabled", "enabled"), ("is-active", "active")):
        assert env.ok(SYSTEMD, f"systemctl {verb} saveos-agent-drill.timer").strip() == want


def test_the_heartbeat_timer_fires_on_its_own(env):
    before = {h: env.beats(h) for h in HOSTS}
    time.sleep(3 * HB + 1)
    after = {h: env.beats(h) for h in HOSTS}
    for host in HOSTS:
        assert after[host] - before[host] >= 2, (host, before, after)
    journal = env.ok(SYSTEMD, "journalctl -u saveos-agent-heartbeat.service --no-pager -o cat")
    assert journal.count("Finished saveos-agent-heartbeat.service") >= 3, journal[-2000:]


def test_a_backup_fires_from_its_timer(env):
    """A drop-in moves the timer's calendar 20 s ahead: the timer, not a command, starts it."""
    before = env.count("snapshots", SYSTEMD)
    at = datetime.now(UTC) + timedelta(seconds=20)
    dropin = "/etc/systemd/system/saveos-agent-backup.timer.d"
    env.ok(
        SYSTEMD,
        f"mkdir -p {dropin} && printf '[Timer]\\nOnCalendar=\\nOnCalendar={at:%Y-%m-%d %H:%M:%S} "
        f"UTC\\nAccuracySec=1s\\n' > {dropin}/test.conf && systemctl daemon-reload "
        "&& systemctl restart saveos-agent-backup.timer",
    )
    try:
        wait_for("the timer's backup", lambda: env.count("snapshots", SYSTEMD) > before, 120)
        journal = env.ok(SYSTEMD, "journalctl -u saveos-agent-backup.service --no-pager -o cat")
        assert "Finished saveos-agent-backup.service" in journal, journal[-2000:]
        triggered = env.ok(
            SYSTEMD, "systemctl show -p LastTriggerUSec --value saveos-agent-backup.timer"
        ).strip()
        assert triggered not in ("", "n/a"), triggered
        assert env.fleet()[SYSTEMD]["last_snapshot_status"] == "ok"
    finally:
        env.ok(
            SYSTEMD,
            f"rm -rf {dropin} && systemctl daemon-reload && systemctl restart "
            "saveos-agent-backup.timer",
        )


# -- heartbeats during long work -----------------------------------------------------------------


def test_heartbeats_go_on_while_a_backup_outlasts_three_intervals(env):
    """Both schedulers: a backup job (queued in the API, like the issue's multi-hour first
    backup) waits 25 s (five heartbeat intervals) on a repository lock held on the host; the
    hosts keep heartbeating, say they run the backup, and never turn silent."""
    hold = 25
    for host in HOSTS:
        env.ok(
            host,
            f"setsid -f borg with-lock /var/lib/saveos/repo sleep {hold} "
            "</dev/null >/dev/null 2>&1",
        )
        wait_for(f"{host}'s lock", lambda h=host: env.sh(
            h, "test -e /var/lib/saveos/repo/lock.exclusive").returncode == 0, 20)  # fmt: skip
    queued = env.saveos("backup", "--via-api", "--limit", ",".join(HOSTS))
    assert queued.returncode == 0, queued.stdout + queued.stderr
    jobs = {h: env.sql(
        "SELECT j.id FROM jobs j JOIN agents a ON a.id = j.agent_id WHERE a.name = :h "
        "ORDER BY j.id DESC LIMIT 1", h=h)[0][0] for h in HOSTS}  # fmt: skip
    beats = {h: env.beats(h) for h in HOSTS}
    started = time.monotonic()
    seen_running: dict[str, str] = {}
    statuses: set[tuple[str, str]] = set()
    cli_said = ""
    while time.monotonic() - started < hold + 2 * HB:
        fleet = env.fleet()
        for host in HOSTS:
            statuses.add((host, fleet[host]["status"]))
            for reason in fleet[host]["reasons"]:
                if reason.startswith(f"running: backup (job {jobs[host]})"):
                    seen_running[host] = reason
        if len(seen_running) == len(HOSTS) and not cli_said:
            cli_said = env.saveos("status").stdout
        time.sleep(1)
    assert not [s for s in statuses if s[1] == "silent"], statuses
    assert set(seen_running) == set(HOSTS), (seen_running, statuses)
    assert "running: backup" in cli_said, cli_said
    for host in HOSTS:
        # the lock was held for 5 intervals: at least 4 beats arrived meanwhile
        assert env.beats(host) - beats[host] >= 4, (host, beats, env.beats(host))
    for host in HOSTS:
        state = "SELECT state FROM jobs WHERE id = :j"
        wait_for(f"{host}'s job", lambda h=host: env.sql(state, j=jobs[h])[0][0] == "succeeded")
    journal = env.ok(SYSTEMD, "journalctl -u saveos-agent-jobs.service --no-pager -o cat")
    assert "Finished saveos-agent-jobs.service" in journal, journal[-2000:]
    # the next heartbeats say nothing runs any more
    wait_for("running to clear", lambda: all(not env.fleet()[h]["running"] for h in HOSTS), 30)


# -- verification --------------------------------------------------------------------------------


def test_scheduled_check_and_drill_run_from_their_units(env):
    checks = env.count("check_results", SYSTEMD)
    env.ok(SYSTEMD, "systemctl start saveos-agent-check.service", timeout=600)
    env.ok(SYSTEMD, "systemctl start saveos-agent-check.service", timeout=600)
    rows = env.sql(
        "SELECT c.verify_data, c.result FROM check_results c JOIN agents a ON a.id = c.agent_id "
        "WHERE a.name = :h ORDER BY c.id",
        h=SYSTEMD,
    )[checks:]
    # The first scheduled check reads every chunk (none did yet), the next one does not.
    assert rows == [(True, "ok"), (False, "ok")], rows
    drills = env.count("drill_results", SYSTEMD, "t.result = 'pass'")
    env.ok(SYSTEMD, "systemctl start saveos-agent-drill.service", timeout=600)
    assert env.count("drill_results", SYSTEMD, "t.result = 'pass'") == drills + 1
    journal = env.ok(SYSTEMD, "journalctl -u saveos-agent-drill.service --no-pager -o cat")
    assert "Finished saveos-agent-drill.service" in journal
    row = env.fleet()[SYSTEMD]
    assert row["status"] == "ok" and row["drill_interval_s"] == 604800, row


def test_every_command_check_drill_and_their_playbooks(env):
    before = {h: (env.count("check_results", h), env.count("drill_results", h)) for h in HOSTS}
    for args in (("check",), ("check", "--verify-data", "--limit", SUPERVISED), ("drill",)):
        r = env.saveos(*args, "--inventory", str(env.inventory))
        assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr[-2000:])
    for name in ("check.yml", "drill.yml"):
        r = env.playbook(name)
        assert r.returncode == 0, (name, r.stdout[-3000:])
    for host in HOSTS:
        checks, drills = before[host]
        extra = 2 if host == SUPERVISED else 1
        assert env.count("check_results", host) == checks + 1 + extra, host
        assert env.count("drill_results", host) == drills + 2, host
    assert env.count("check_results", SUPERVISED, "t.verify_data") >= 1


def test_agents_rotate_gives_a_new_token_that_works(env):
    old = env.ok(SUPERVISED, "cat /etc/saveos/token").strip()
    r = env.saveos("agents", "rotate", SUPERVISED, "--inventory", str(env.inventory))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "has a new token" in r.stdout
    new = env.ok(SUPERVISED, "cat /etc/saveos/token").strip()
    assert new != old
    tokens = env.sql(
        "SELECT t.revoked_at IS NULL FROM agent_tokens t JOIN agents a ON a.id = t.agent_id "
        "WHERE a.name = :h ORDER BY t.id",
        h=SUPERVISED,
    )
    assert [live for (live,) in tokens] == [False, True]
    out = json.loads(env.ok(SUPERVISED, "/usr/local/bin/saveos-agent --json heartbeat"))
    assert out["status"] == "ok"
    refused = httpx.post(
        env.api.url + "/api/v1/agents/heartbeat",
        json={},
        headers={"Authorization": f"Bearer {old}"},
        timeout=10,
    )
    assert refused.status_code == 401


def _tamper(env: Env, host: str, path: str) -> None:
    """Change a byte of a source file but keep its size and mtime: bit rot the backup must
    notice (the drill only compares files that look unchanged since the archive)."""
    env.ok(
        host,
        "python3 -c \"import os,sys; p=sys.argv[1]; st=os.stat(p); b=bytearray(open(p,'rb')"
        ".read()); b[100]^=0xFF; open(p,'wb').write(b); os.utime(p, ns=(st.st_atime_ns, "
        f'st.st_mtime_ns))" {path}',
    )


def test_a_drill_that_fails_for_real_turns_the_host_failing(env):
    for host in HOSTS:
        for i in range(1, 6):
            _tamper(env, host, f"{SOURCE}/f{i}")
    r = env.saveos("drill", "--inventory", str(env.inventory), "--limit", SUPERVISED)
    assert r.returncode == 2, r.stdout[-3000:]
    unit = env.sh(SYSTEMD, "systemctl start saveos-agent-drill.service", timeout=600)
    assert unit.returncode != 0  # the scheduled drill's unit fails, visibly
    journal = env.ok(SYSTEMD, "journalctl -u saveos-agent-drill.service --no-pager -o cat")
    assert "Failed with result 'exit-code'" in journal, journal[-2000:]
    fleet = env.fleet()
    for host in HOSTS:
        assert fleet[host]["status"] == "failing", fleet[host]
        assert "failed drill" in fleet[host]["reasons"], fleet[host]
        assert fleet[host]["last_drill_result"] == "fail"
    status = env.saveos("status")
    assert status.returncode == 2 and "failed drill" in status.stdout, status.stdout
    # /metrics: the last verified restore stays at the last passing drill.
    metrics = httpx.get(env.api.url + "/metrics", headers=env.api.admin_headers()).text
    gauge = {
        name: float(value)
        for name, value in re.findall(
            r'^saveos_agent_last_verified_restore_timestamp_seconds\{agent="(\w+)"\} (\S+)$',
            metrics,
            re.M,
        )
    }
    drilled = {
        name: float(value)
        for name, value in re.findall(
            r'^saveos_agent_last_drill_timestamp_seconds\{agent="(\w+)"\} (\S+)$', metrics, re.M
        )
    }
    for host in HOSTS:
        assert gauge[host] < drilled[host], (gauge, drilled)


# -- the way out ---------------------------------------------------------------------------------


def test_uninstall_removes_every_unit(env):
    r = env.playbook("uninstall.yml")
    assert r.returncode == 0, r.stdout[-4000:]
    assert env.ok(SYSTEMD, "ls /etc/systemd/system | grep -c saveos || true").strip() == "0"
    # (list-unit-files exits 1 when nothing matches)
    assert env.sh(SYSTEMD, "systemctl list-unit-files --no-legend 'saveos*'").stdout.strip() == ""
    loaded = env.sh(SYSTEMD, "systemctl list-units --all --no-legend --plain 'saveos*'").stdout
    assert loaded.strip() == "", loaded
    assert "saveos" not in env.ok(SYSTEMD, "systemctl list-timers --all --no-legend")
    assert env.sh(SUPERVISED, "pgrep -f 'saveos-agent.pyz.* daemon'").returncode == 1
    assert env.ok(SYSTEMD, "systemctl is-system-running").strip() == "running"


def test_lab_down_stops_the_systemd_host(env):
    host = next(h for h in env.lab.hosts() if h.name == SYSTEMD)
    assert _proc_alive(host.sshd_pid)
    started = time.monotonic()
    assert env.lab.down() is True
    took = time.monotonic() - started
    assert not _proc_alive(host.sshd_pid) and not _proc_alive(host.unshare_pid)
    assert took < lab_systemd.STOP_TIMEOUT
    merged = str(lab_systemd.layers(env.lab, SYSTEMD)["merged"])
    assert merged not in Path("/proc/mounts").read_text()
    assert not env.lab.dir.exists() or not any(env.lab.dir.iterdir())
