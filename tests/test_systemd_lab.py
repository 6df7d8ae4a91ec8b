"""The path real servers take (issue 17), on PostgreSQL: a systemd lab host (lab2: PID 1 is
systemd, booted by systemd-nspawn) beside a plain one (lab1: the supervised daemon), deployed
once for the whole module from the installed saveos.fleet collection through ansible-runner
(what AWX does).

In file order: the host boots; the deploy enabled the timers at the host's slots; the heartbeat
timer fires on its own; a backup fires from its timer; heartbeats go on (never silent) while a
real, throttled backup outlasts three heartbeat intervals, on both schedulers; scheduled check
and drill from the units, and from the supervised daemon at its slots; every command (check,
drill, agents rotate, their playbooks); a drill that fails for real turns the host failing; the
controller's escrow-proof schedule (cron run for real, timers on systemd); uninstall removes
every unit; a RHEL-family host is refused; lab down stops the systemd host.

Timing: every wait is a condition with a deadline (LOADED_S allows a loaded 2-core machine),
never a fixed sleep that a slow run outlasts.

Over 400 lines on purpose: every case runs, in file order, on the one systemd lab the module
deploys (minutes to boot and deploy); a second module would deploy it again."""

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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cli_support
import httpx
import pytest
import sqlalchemy as sa
import yaml
from ansible_support import ansible, ansible_env, playbook
from conftest import REPO_ROOT, ApiServer, _pg_database, lab_net, require_root
from throttle_support import BorgThrottle, pid_namespace
from wait_support import wait_for

from saveos_lab import systemd as lab_systemd
from saveos_lab.lab import Lab, _proc_alive

pytestmark = [pytest.mark.lab, pytest.mark.pg]

LAB_PORT = int(os.environ.get("SAVEOS_SYSTEMD_LAB_PORT", "2217"))
SUPERVISED, SYSTEMD = "lab1", "lab2"
HOSTS = (SUPERVISED, SYSTEMD)
HB = 5  # heartbeat interval: silent after 15 s
# What a 2-core CI machine under load adds to a wait: a deadline, never a sleep.
LOADED_S = 60
SOURCE = "/srv/data"
TIMERS = (
    "saveos-agent-heartbeat.timer",
    "saveos-agent-backup.timer",
    "saveos-agent-check.timer",
    "saveos-agent-drill.timer",
)


class Env:
    def __init__(self, work: Path, db_url: str):
        self.work = work
        self.api = ApiServer(db_url, work / "api")
        self.lab = Lab(work / "lab", net=lab_net(), port=LAB_PORT)
        self.inventory = work / "inventory.yml"
        self.data = work / "data"
        # in the data dir: where a scheduled `saveos escrow verify` finds it (SAVEOS_DATA_DIR)
        self.escrow = self.data / "escrow"
        self.engine: sa.Engine | None = None
        # (epoch second, heartbeat counts) when the deploy ended
        self.deployed: tuple[int, dict[str, int]] = (0, {})

    @property
    def env(self) -> dict[str, str]:
        return ansible_env(
            {
                "SAVEOS_API_URL": self.api.url,
                "SAVEOS_ADMIN_TOKEN": self.api.admin_token,
                "SAVEOS_DATA_DIR": str(self.data),
                "SAVEOS_ESCROW_DIR": str(self.escrow),
                "NO_COLOR": "1",
                "COLUMNS": "250",
            }
        )

    def sh(self, host: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.lab.ssh(host, command, timeout=timeout)

    def ok(self, host: str, command: str, timeout: float = 300) -> str:
        r = self.sh(host, command, timeout)
        assert r.returncode == 0, f"{host}: {command}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def saveos(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return cli_support.saveos(*args, env=self.env, timeout=timeout)

    def playbook(self, name: str, *args: str) -> subprocess.CompletedProcess:
        return playbook(self.inventory, f"playbooks/{name}", *args, env=self.env, timeout=900)

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


def _install_the_collection(env: Env) -> Path:
    """Build and install saveos.fleet offline: the collections directory."""
    dist, collections = env.work / "dist", env.work / "collections"
    build = subprocess.run(
        [sys.executable, str(REPO_ROOT / "collections/build.py"),
         "--work", str(env.work / "assemble"), "--out", str(dist)],
        capture_output=True, text=True, cwd=env.work, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    install = ansible(
        "ansible-galaxy", "collection", "install", "--offline",
        "-p", str(collections), build.stdout.strip(), cwd=env.work, env=env.env,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return collections


def _deploy_from_the_collection(env: Env, collections: Path, verbosity: int = 0):
    """Run a project playbook that imports the installed collection's deploy playbook through
    ansible-runner, as an AWX job does. The runner and its stdout."""
    import ansible_runner

    project = env.work / "project"
    if not project.exists():
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
    with _pg_database("saveos_sd") as (_, db_url):
        env = Env(work, db_url)
        env.engine = sa.create_engine(db_url, pool_size=2)
        pool = ThreadPoolExecutor(max_workers=1)
        env.api.start_timeout = LOADED_S
        try:
            env.api.start()
            # The waits overlap: the collection builds while the hosts boot.
            installing = pool.submit(_install_the_collection, env)
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
            _deploy_from_the_collection(env, installing.result())
            env.deployed = (int(time.time()), {h: env.beats(h) for h in HOSTS})
            yield env
        finally:
            pool.shutdown(wait=True)
            env.api.stop()
            env.lab.down()
            env.engine.dispose()


def host_minute(name: str) -> int:
    """The backup minute of day the role gives `name` (window 01:00 + 180 min, sha1)."""
    return 60 + int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 180


def unit_runs_since(env: Env, unit: str, since: int) -> int:
    """How many runs of a oneshot unit finished since the epoch second `since` (the lab
    host's journal has the controller's clock: one kernel)."""
    journal = env.ok(SYSTEMD, f"journalctl -u {unit} --since @{since} --no-pager -o cat")
    return journal.count(f"Finished {unit}")


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
    runner, text = _deploy_from_the_collection(env, env.work / "collections", verbosity=1)
    flat = " ".join(text.split())  # the YAML result callback folds long items over lines
    for item in (f"{unit}: content differs", "saveos-agent-drill.timer: disabled, enabled",
                 "saveos-agent-drill.timer: inactive, started"):  # fmt: skip
        assert item in flat, (item, text[-6000:])
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
    """Nothing but the timer beats for lab2 since the deploy ended (lab1: its daemon). Count
    only the runs that finished in that window (which the tests before this one already
    started), and wait for three with a deadline that allows a loaded machine: each run is one
    beat, so the journal and the API must agree to within the run in flight."""
    since, before = env.deployed

    def three_each():
        beats = {h: env.beats(h) - before[h] for h in HOSTS}
        runs = unit_runs_since(env, "saveos-agent-heartbeat.service", since)
        return (beats, runs) if runs >= 3 and min(beats.values()) >= 3 else None

    beats, runs = wait_for(three_each, LOADED_S + 3 * HB, "three heartbeats from the timer", 0.5)
    after = env.beats(SYSTEMD) - before[SYSTEMD]
    # At most one run straddles `since` (beat before, finished after) and at most one is in
    # flight (beat counted, not finished yet): the timer's runs are the host's beats.
    assert beats[SYSTEMD] - 1 <= runs <= after + 1, (beats, runs, after)
    timer = env.ok(SYSTEMD, "systemctl show -p TimersMonotonic saveos-agent-heartbeat.timer")
    assert f"OnUnitActiveUSec={HB}s" in timer.replace(" ", ""), timer


def test_a_backup_fires_from_its_timer(env):
    """A drop-in moves the timer's calendar 10 s ahead (of the host's clock, when it is
    written: no SSH latency in between): the timer, not a command, starts the backup."""
    before = env.count("snapshots", SYSTEMD)
    dropin = "/etc/systemd/system/saveos-agent-backup.timer.d"
    at = env.ok(
        SYSTEMD,
        f"at=$(date -u -d @$(($(date +%s) + 10)) '+%Y-%m-%d %H:%M:%S') && mkdir -p {dropin} && "
        f"printf '[Timer]\\nOnCalendar=\\nOnCalendar=%s UTC\\nAccuracySec=1s\\n' \"$at\" "
        f"> {dropin}/test.conf && systemctl daemon-reload "
        '&& systemctl restart saveos-agent-backup.timer && echo "$at"',
    ).strip()
    try:
        wait_for(lambda: env.count("snapshots", SYSTEMD) > before, 120, "the timer's backup", 0.5)
        journal = env.ok(SYSTEMD, "journalctl -u saveos-agent-backup.service --no-pager -o cat")
        assert "Finished saveos-agent-backup.service" in journal, journal[-2000:]
        triggered = env.ok(
            SYSTEMD, "TZ=UTC systemctl show -p LastTriggerUSec --value saveos-agent-backup.timer"
        ).strip()
        assert triggered not in ("", "n/a"), triggered
        fired = datetime.strptime(triggered, "%a %Y-%m-%d %H:%M:%S %Z")
        assert fired >= datetime.strptime(at, "%Y-%m-%d %H:%M:%S"), (triggered, at)
        assert env.fleet()[SYSTEMD]["last_snapshot_status"] == "ok"
    finally:
        env.ok(
            SYSTEMD,
            f"rm -rf {dropin} && systemctl daemon-reload && systemctl restart "
            "saveos-agent-backup.timer",
        )


# -- heartbeats during long work -----------------------------------------------------------------


def test_heartbeats_go_on_while_a_backup_outlasts_three_intervals(env):
    """Both schedulers: a real backup of a real source (8 MB more of random data) queued in the
    API, its borg held to 1 % of a CPU (the multi-hour first backup of a large host, in
    miniature) until it has run for more than three heartbeat intervals: the hosts keep
    heartbeating, say they run the backup, never turn silent, and the backup then completes."""
    for host in HOSTS:
        env.ok(host, f"head -c 8M /dev/urandom > {SOURCE}/big")
    snapshots = {h: env.count("snapshots", h) for h in HOSTS}
    namespaces = {h: pid_namespace(env.lab, h) for h in HOSTS}
    assert len(set(namespaces.values())) == len(HOSTS), namespaces
    with BorgThrottle(namespaces) as throttle:
        queued = env.saveos("backup", "--via-api", "--limit", ",".join(HOSTS))
        assert queued.returncode == 0, queued.stdout + queued.stderr
        jobs = {h: env.sql(
            "SELECT j.id FROM jobs j JOIN agents a ON a.id = j.agent_id WHERE a.name = :h "
            "ORDER BY j.id DESC LIMIT 1", h=h)[0][0] for h in HOSTS}  # fmt: skip
        wait_for(lambda: len(throttle.caught) == len(HOSTS), LOADED_S + 3 * HB,
                 "borg create on both hosts", 0.5)  # fmt: skip
        beats = {h: env.beats(h) for h in HOSTS}
        watch_from = time.monotonic()
        seen_running: dict[str, str] = {}
        statuses: set[tuple[str, str]] = set()
        cli_said = ""
        # Watch until each borg has run for four intervals (silent is three without a beat).
        while time.monotonic() - max(throttle.caught_at.values()) < 4 * HB:
            fleet = env.fleet()
            for host in HOSTS:
                statuses.add((host, fleet[host]["status"]))
                for reason in fleet[host]["reasons"]:
                    if reason.startswith(f"running: backup (job {jobs[host]})"):
                        seen_running[host] = reason
            if len(seen_running) == len(HOSTS) and not cli_said:
                cli_said = env.saveos("status").stdout
            time.sleep(1)
        watched = time.monotonic() - watch_from
        still = {h: throttle.alive(h) for h in HOSTS}
        after = {h: env.beats(h) for h in HOSTS}
        throttle.release()
        assert all(still.values()), ("a backup ended before 4 intervals", still)
        assert throttle.throttled_periods() > 0
    assert not [s for s in statuses if s[1] == "silent"], statuses
    assert set(seen_running) == set(HOSTS), (seen_running, statuses)
    assert "running: backup" in cli_said, cli_said
    for host in HOSTS:
        # never silent means a beat at least every 3 intervals, whatever the load: so many, and
        # two at the very least, arrived while borg ran
        least = max(2, int(watched // (3 * HB)))
        assert after[host] - beats[host] >= least, (host, least, beats, after)
    for host in HOSTS:
        state = "SELECT state FROM jobs WHERE id = :j"
        wait_for(lambda h=host: env.sql(state, j=jobs[h])[0][0] == "succeeded", LOADED_S + 60,
                 f"{host}'s job", 0.5)  # fmt: skip
        assert env.count("snapshots", host) == snapshots[host] + 1, host
    journal = env.ok(SYSTEMD, "journalctl -u saveos-agent-jobs.service --no-pager -o cat")
    assert "Finished saveos-agent-jobs.service" in journal, journal[-2000:]
    # the next heartbeats say nothing runs any more
    wait_for(
        lambda: all(not env.fleet()[h]["running"] for h in HOSTS),
        LOADED_S + 3 * HB,
        "running to clear",
        0.5,
    )


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
    """All five at once (the agent's per-host guard queues them on each host; the Ansible runs
    around them overlap)."""
    before = {h: (env.count("check_results", h), env.count("drill_results", h)) for h in HOSTS}
    commands = (("check",), ("check", "--verify-data", "--limit", SUPERVISED), ("drill",))
    with ThreadPoolExecutor(max_workers=5) as pool:
        runs = {
            args: pool.submit(env.saveos, *args, "--inventory", str(env.inventory))
            for args in commands
        }
        runs |= {(name,): pool.submit(env.playbook, name) for name in ("check.yml", "drill.yml")}
        for what, run in runs.items():
            r = run.result()
            assert r.returncode == 0, (what, r.stdout[-3000:], r.stderr[-2000:])
    for host in HOSTS:
        checks, drills = before[host]
        extra = 2 if host == SUPERVISED else 1
        assert env.count("check_results", host) == checks + 1 + extra, host
        assert env.count("drill_results", host) == drills + 2, host
    assert env.count("check_results", SUPERVISED, "t.verify_data") >= 1


def test_the_supervised_daemon_runs_check_and_drill_at_their_slots(env):
    """The fallback scheduler on lab1: its agent.json as a deploy with an hourly check and drill
    would write it, with slots that fall 15 s and 18 s from now. The restarted daemon runs each
    at its slot, not before, with no command and no job, and reports both to the API."""
    config = "/etc/saveos/agent.json"
    cfg = json.loads(env.ok(SUPERVISED, f"cat {config}"))
    state = json.loads(env.ok(SUPERVISED, f"cat {cfg['state_dir']}/state.json"))
    hour, now = 3600, time.time()
    check_at, drill_at = int(now) + 15, int(now) + 18  # the drill's slot comes while the check runs
    for last in (state.get("last_check_at"), state.get("last_drill_at")):
        # the slot after the last run (the tests before ran both on lab1) is the one set here;
        # that run may have ended within this second (not before a whole one: a CI run failed so)
        assert last and now - hour < datetime.fromisoformat(last).timestamp() < now, state
    slots = {
        "check_interval_s": hour, "check_offset_s": check_at % hour,
        "drill_interval_s": hour, "drill_offset_s": drill_at % hour,
    }  # fmt: skip
    counts = (env.count("check_results", SUPERVISED), env.count("drill_results", SUPERVISED))
    edit = (
        "import json, sys; p = sys.argv[1]; c = json.load(open(p)); "
        "c['verify'].update(json.loads(sys.argv[2])); open(p + '.new', 'w').write(json.dumps(c))"
    )
    rows = (
        "SELECT t.started_at, t.job_id, t.result FROM {} t JOIN agents a ON a.id = t.agent_id "
        "WHERE a.name = :h ORDER BY t.id"
    )

    def both_ran():
        c = env.sql(rows.format("check_results"), h=SUPERVISED)[counts[0] :]
        d = env.sql(rows.format("drill_results"), h=SUPERVISED)[counts[1] :]
        return (c, d) if c and d else None

    try:
        env.ok(
            SUPERVISED,
            f'cp -p {config} {config}.before && python3 -c "{edit}" {config} '
            f"'{json.dumps(slots)}' && chmod --reference={config} {config}.new && "
            f"mv {config}.new {config} && /opt/saveos/supervise restart",
        )
        checks = wait_for(both_ran, LOADED_S + 18, "the daemon's scheduled check and drill", 0.5)
    finally:
        env.ok(SUPERVISED, f"mv {config}.before {config} && /opt/saveos/supervise restart")
    (check_row, *more_checks), (drill_row, *more_drills) = checks
    assert not more_checks and not more_drills, checks  # one each: the slot, then an hour
    for (started, job_id, result), slot in ((check_row, check_at), (drill_row, drill_at)):
        assert job_id is None and result in ("ok", "pass"), (started, job_id, result)
        assert started.replace(tzinfo=UTC).timestamp() >= slot - 1, (started, slot)
    log = env.ok(SUPERVISED, f"cat {cfg['log_file']}")
    assert "scheduled check ok" in log and "scheduled drill" in log, log[-2000:]


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
    with ThreadPoolExecutor(max_workers=1) as pool:  # one host each: both at once
        command = pool.submit(
            env.saveos, "drill", "--inventory", str(env.inventory), "--limit", SUPERVISED
        )
        unit = env.sh(SYSTEMD, "systemctl start saveos-agent-drill.service", timeout=600)
        r = command.result()
    assert r.returncode == 2, r.stdout[-3000:]
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


def test_the_escrow_schedule_proves_every_hosts_escrow(env):
    """playbooks/escrow-schedule.yml on a controller without systemd writes a cron line; run as
    cron runs it (sh, cron's bare environment, the admin token only in the data dir), it proves
    both hosts' escrow and records the proofs. On a systemd host (lab2, standing in for a
    controller) the same role, and the prune schedule beside it, install enabled timers at their
    calendars; state=absent removes every file again."""
    play = env.work / "schedules.yml"
    play.write_text(
        "- hosts: lab2\n  gather_facts: false\n  roles:\n"
        "    - saveos_prune_schedule\n    - saveos_escrow_schedule\n"
    )
    schedule_vars = (
        "-e", "saveos_prune_schedule_inventory=/srv/saveos/hosts.yml",
        "-e", "saveos_escrow_schedule_inventory=/srv/saveos/hosts.yml",
        "-e", "saveos_prune_schedule_command=/usr/local/bin/saveos",
        "-e", "saveos_escrow_schedule_command=/usr/local/bin/saveos",
    )  # fmt: skip

    def schedules(*extra: str) -> subprocess.CompletedProcess:
        return playbook(env.inventory, play, *schedule_vars, *extra, env=env.env)

    with ThreadPoolExecutor(max_workers=1) as pool:
        timers = pool.submit(schedules)  # the timers on lab2 meanwhile: another host
        cron = env.work / "saveos-escrow-verify"
        made = env.playbook(
            "escrow-schedule.yml", "-e", "ansible_service_mgr=cron",
            "-e", f"ansible_python_interpreter={sys.executable}",
            "-e", f"saveos_escrow_schedule_inventory={env.inventory}",
            "-e", f"saveos_escrow_schedule_cron_file={cron}",
        )  # fmt: skip
        assert made.returncode == 0, made.stdout[-3000:]
        line = next(ln for ln in cron.read_text().splitlines() if " root " in ln)
        assert line.startswith("30 4 * * 0 root "), line
        token = env.data / "admin.token"
        token.write_text(env.api.admin_token + "\n")
        token.chmod(0o600)
        before = {h: env.fleet()[h]["last_escrow_at"] for h in HOSTS}
        home = env.work / "cron-home"
        home.mkdir()
        ran = subprocess.run(
            ["sh", "-c", line.split(" root ", 1)[1]],
            env={"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh"},
            capture_output=True, text=True, timeout=600, cwd=home,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
        fleet = env.fleet()
        for host in HOSTS:
            assert fleet[host]["last_escrow_result"] == "ok", fleet[host]
            assert fleet[host]["last_escrow_at"] != before[host], (before, fleet[host])
        r = timers.result()
    assert r.returncode == 0, r.stdout[-3000:]
    for name, weekday in (("saveos-escrow-verify", "Sun"), ("saveos-prune", None)):
        assert env.ok(SYSTEMD, f"systemctl is-enabled {name}.timer").strip() == "enabled"
        assert env.ok(SYSTEMD, f"systemctl is-active {name}.timer").strip() == "active"
        nxt = env.ok(
            SYSTEMD, f"TZ=UTC systemctl show -p NextElapseUSecRealtime --value {name}.timer"
        ).strip()
        assert nxt.endswith(":30:00 UTC") and (weekday is None or nxt.startswith(weekday)), nxt
    unit = env.ok(SYSTEMD, "systemctl cat saveos-escrow-verify.service")
    assert (
        "ExecStart=/usr/local/bin/saveos escrow verify --inventory /srv/saveos/hosts.yml "
        "--method auto"
    ) in unit, unit
    gone = schedules(
        "-e", "saveos_prune_schedule_state=absent", "-e", "saveos_escrow_schedule_state=absent"
    )  # fmt: skip
    assert gone.returncode == 0, gone.stdout[-3000:]
    left = env.ok(SYSTEMD, "ls /etc/systemd/system | grep -E 'saveos-(prune|escrow)' || true")
    assert left.strip() == "", left
    timers = env.ok(SYSTEMD, "systemctl list-timers --all --no-legend --plain")
    assert "saveos-prune" not in timers and "saveos-escrow" not in timers, timers


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


ROCKY_OS_RELEASE = (
    'NAME="Rocky Linux"\\nVERSION="9.3 (Blue Onyx)"\\nID="rocky"\\nID_LIKE="rhel centos fedora"\\n'
    'VERSION_ID="9.3"\\nPRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\\n'
)


def test_deploy_refuses_a_rhel_family_host(env):
    """Honest platforms: lab2, uninstalled, dressed as Rocky Linux 9 (os-release and
    redhat-release in its own overlay, where Ansible's fact gathering reads them) is refused by
    the role's OS check with a message that names it, before anything is installed."""
    env.ok(
        SYSTEMD,
        "mv /etc/os-release /etc/os-release.debian && "
        f"printf '{ROCKY_OS_RELEASE}' > /etc/os-release && "
        "echo 'Rocky Linux release 9.3 (Blue Onyx)' > /etc/redhat-release",
    )
    try:
        r = env.playbook("deploy.yml", "--limit", SYSTEMD)
    finally:
        env.ok(SYSTEMD, "rm /etc/os-release /etc/redhat-release && "
               "mv /etc/os-release.debian /etc/os-release")  # fmt: skip
    said = " ".join(r.stdout.split())
    assert r.returncode != 0, said[-2000:]
    assert "lab2 runs Rocky 9.3 (RedHat family): SaveOS supports Debian-family hosts" in said
    assert "nothing was changed on lab2" in said
    nothing = env.sh(SYSTEMD, "ls -d /etc/saveos /opt/saveos /etc/systemd/system/saveos-agent*")
    assert nothing.returncode != 0, nothing.stdout


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
