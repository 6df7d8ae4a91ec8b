"""Fixtures for the fleet acceptance suite (issue 7), plus the figure lines each case prints.

Every case appends one line to `figures`; they are printed after the run (even under pytest's
output capture) so CI logs show e.g. `R1 restore round trip: 3/3 hosts identical, 1,204 files`.
The API always runs as a real uvicorn process (`saveos server`) on a fresh PostgreSQL database.

Over 400 lines on purpose: the fleets the cases share (deployed once per session or package:
minutes each) and the helpers every case calls on them are one fixture layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import cli_support
import httpx
import pytest
import sqlalchemy as sa
import yaml
from ansible_support import ansible_env, playbook
from conftest import ApiServer, _pg_database, lab_net, require_root
from db_support import MariaDB

from saveos_lab.lab import Lab

FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("SaveOS acceptance figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def figures() -> list[str]:
    """Append one human-readable figure line per case."""
    return FIGURES


class Rows:
    """Row counts straight from PostgreSQL, to prove what a request did or did not write."""

    TABLES = (
        "agents",
        "agent_tokens",
        "heartbeats",
        "jobs",
        "snapshots",
        "check_results",
        "drill_results",
    )

    def __init__(self, url: str):
        self.engine = sa.create_engine(url, pool_size=2)

    def count(self, table: str, where: str = "") -> int:
        with self.engine.connect() as conn:
            sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
            return conn.execute(sa.text(sql)).scalar_one()

    def fingerprint(self) -> dict[str, object]:
        """Row counts of every table plus the mutable agent, token and job columns (one
        connection); any write by a request changes it. Tokens' advisory last_used_at is left out.
        """
        counts = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in self.TABLES)
        with self.engine.connect() as conn:
            out: dict[str, object] = dict(conn.execute(sa.text(counts)).all())
            out["agents_rows"] = conn.execute(
                sa.text(
                    "SELECT id, name, last_heartbeat_at, heartbeat_count, agent_version, hostname, "
                    "decommissioned_at FROM agents ORDER BY id"
                )
            ).all()
            out["tokens"] = conn.execute(
                sa.text("SELECT id, revoked_at FROM agent_tokens ORDER BY id")
            ).all()
            out["jobs_rows"] = conn.execute(
                sa.text("SELECT id, state, finished_at FROM jobs ORDER BY id")
            ).all()
        return out


class ApiOnPg:
    """A real API server on its own fresh PostgreSQL database, and that database's row counts."""

    def __init__(self, data_dir: Path, tls: bool = False, workers: int = 1):
        self._database = _pg_database("saveos_accept")
        self.db_name, self.db_url = self._database.__enter__()
        self.server = ApiServer(self.db_url, data_dir, tls=tls, workers=workers)
        self.rows = Rows(self.db_url)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin(self) -> dict[str, str]:
        return self.server.admin_headers()

    def close(self) -> None:
        self.server.stop()
        self.rows.engine.dispose()
        self._database.__exit__(None, None, None)


@pytest.fixture(scope="module")
def api_pg(tmp_path_factory) -> ApiOnPg:
    """A running API on a PostgreSQL database of its own, for one test module."""
    api = ApiOnPg(tmp_path_factory.mktemp("accept-api"))
    try:
        api.server.start()
        yield api
    finally:
        api.close()


# -- the fleet: 3 lab hosts deployed once with the role, API on PostgreSQL ------------------------

LAB_PORT = int(os.environ.get("SAVEOS_ACCEPT_LAB_PORT", "18822"))
SOURCES = "/srv/accept"
# lab2 also dumps a MariaDB database with a password of its own (R7: never in argv or logs);
# the database and its user are named per run (Fleet.db_name): runs side by side on this
# machine must never replace each other's user and password.
DB_HOST = "lab2"
DB_PASSWORD_ENV = "SAVEOS_TEST_R7_DB_PASSWORD"


class CmdlineWatcher:
    """Snapshots every process's /proc/PID/cmdline (lab hosts' included) while it runs."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.seen: set[str] = set()
        self.snapshots = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                            raw = f.read()
                    except OSError:
                        continue
                    self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace"))
            self.snapshots += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> CmdlineWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class Fleet:
    """Three lab hosts with the agent deployed by the role, and the API on PostgreSQL."""

    hosts = ("lab1", "lab2", "lab3")

    def __init__(self, lab: Lab, api: ApiOnPg, work: Path):
        self.lab, self.api, self.work = lab, api, work
        self.escrow = work / "escrow"
        self.inventory = work / "inventory.yml"
        self.outputs: list[str] = []  # everything ansible and the CLI printed
        self.deploy_cmdlines: set[str] = set()  # every argv seen during the first deploy
        self.db = MariaDB()
        self.db_name = f"saveos_t22_r7_{uuid.uuid4().hex[:10]}"
        # a lone " and a trailing \: what the option file must escape (they were once written
        # wrong, and the server refused the dump)
        self.db_password = "db-" + uuid.uuid4().hex + ':"\\'

    @property
    def env(self) -> dict[str, str]:
        return ansible_env(
            {
                "SAVEOS_API_URL": self.api.url,
                # The lab path is HTTPS with the fleet's own CA: the role copies it to every host.
                "SAVEOS_CA_FILE": str(self.api.server.ca_file),
                "SAVEOS_ADMIN_TOKEN": self.api.server.admin_token,
                "SAVEOS_DATA_DIR": str(self.work / "data"),
                "SAVEOS_ESCROW_DIR": str(self.escrow),
                "NO_COLOR": "1",
                "COLUMNS": "200",
                DB_PASSWORD_ENV: self.db_password,  # the role reads it from the environment
            }
        )

    def write_inventory(self, path: Path | None = None, extra_host: dict | None = None) -> Path:
        inventory = yaml.safe_load(self.lab.inventory_path.read_text())
        group = inventory["all"]["children"]["lab"]
        group["vars"] = {
            "saveos_agent_sources": [SOURCES],
            "saveos_agent_heartbeat_interval_s": 5,
            "saveos_agent_lock_wait_s": 60,
        }
        password = f"{{{{ lookup('ansible.builtin.env', '{DB_PASSWORD_ENV}') }}}}"
        group["hosts"][DB_HOST]["saveos_agent_databases"] = [
            {"type": "mariadb", "name": self.db_name, "host": "127.0.0.1", "port": 3306,
             "user": self.db_name, "password": password}
        ]  # fmt: skip
        group["hosts"].update(extra_host or {})
        path = path or self.inventory
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path

    def playbook(self, name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        result = playbook(self.inventory, f"playbooks/{name}", *args, env=self.env, timeout=timeout)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def saveos(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        result = cli_support.saveos(*args, env=self.env, timeout=timeout)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def sh(self, host: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.lab.ssh(host, command, timeout=timeout)

    def agent(self, host: str, *args: str, timeout: float = 600) -> tuple[int, dict]:
        """`saveos-agent --json ARGS` on a host: (exit code, parsed output)."""
        r = self.sh(host, "/usr/local/bin/saveos-agent --json " + " ".join(args), timeout)
        try:
            return r.returncode, json.loads(r.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"{host}: {args}: rc={r.returncode}\n{r.stdout}\n{r.stderr}")

    def agent_ids(self) -> dict[str, int]:
        with httpx.Client(base_url=self.api.url, timeout=10, verify=self.api.server.verify) as http:
            agents = http.get("/api/v1/agents", headers=self.api.admin).json()["agents"]
        return {a["name"]: a["id"] for a in agents}

    def secrets(self) -> dict[str, str]:
        """Every secret of the fleet: admin token, per host token and passphrase."""
        found = {"admin token": self.api.server.admin_token}
        for host in self.hosts:
            found[f"{host} passphrase"] = (self.escrow / host / "passphrase").read_text().strip()
            found[f"{host} token"] = self.sh(host, "cat /etc/saveos/token").stdout.strip()
        found[f"{DB_HOST} database password"] = self.db_password
        return found


def _make_database(fleet: Fleet) -> None:
    fleet.db.make(fleet.db_name, rows=100)
    escaped = fleet.db_password.replace("\\", "\\\\").replace("'", "\\'")
    grants = [fleet.db_name.replace("_", "\\_"), "saveos\\_drill\\_%"]  # drills: scratch dbs
    fleet.db.user(fleet.db_name, escaped, grants)


def _drop_database(fleet: Fleet) -> None:
    fleet.db.drop(fleet.db_name)
    fleet.db.drop_user(fleet.db_name)


@contextlib.contextmanager
def lab_fleet(
    tmp_path_factory,
    cls: type[Fleet],
    port: int,
    repo_servers: int = 0,
    prepare=None,
    cleanup=None,
    tls: bool = False,
):
    """A Fleet of `cls` on a new lab and a new API on PostgreSQL; both stopped afterwards.
    `prepare(fleet)` runs before the inventory is written, `cleanup(fleet)` after the end."""
    require_root()
    work = tmp_path_factory.mktemp(cls.__name__.lower())
    work.chmod(0o700)
    lab = Lab(work / "lab", net=lab_net(), port=port)
    api = ApiOnPg(work / "api", tls=tls)
    fleet = cls(lab, api, work)
    try:
        lab.up(len(cls.hosts), repo_servers=repo_servers)
        api.server.start()
        if prepare:
            prepare(fleet)
        fleet.write_inventory()
        yield fleet
    finally:
        try:
            # the hosts first: their agents' idle keep-alive connections would hold the API's
            # stop for its shutdown grace (saveos_cli.commands.server.SHUTDOWN_GRACE_S)
            lab.down()
        finally:
            api.close()
            if cleanup:
                cleanup(fleet)


@pytest.fixture(scope="package")
def fleet(tmp_path_factory) -> Fleet:
    """Lab up (3 hosts), API on PostgreSQL over HTTPS (its own CA), role deployed at -vvv while
    /proc is watched."""
    with lab_fleet(
        tmp_path_factory, Fleet, LAB_PORT, prepare=_make_database, cleanup=_drop_database, tls=True
    ) as fleet:
        for host in Fleet.hosts:
            assert (
                fleet.sh(host, f"mkdir -p {SOURCES} && echo {host} > {SOURCES}/host").returncode
                == 0
            )
        with CmdlineWatcher() as watcher:
            deployed = fleet.playbook("deploy.yml", "-vvv")
        fleet.deploy_cmdlines = watcher.seen
        assert deployed.returncode == 0, deployed.stdout[-5000:] + deployed.stderr[-3000:]
        yield fleet


# -- the fleet backing up to a repository server: 3 lab hosts + repo1 (issue 14) ------------------

REPO_LAB_PORT = LAB_PORT + 1


class RepoFleet(Fleet):
    """lab1..lab3 backing up to repo1, a SaveOS repository server, deployed once."""

    server = "repo1"

    def write_inventory(self, path: Path | None = None, extra_host: dict | None = None) -> Path:
        path = super().write_inventory(path, extra_host)
        inventory = yaml.safe_load(path.read_text())
        group = inventory["all"]["children"]["lab"]
        group["vars"]["saveos_agent_lock_wait_s"] = 10
        # No database dumps here: the R7 fleet owns the MariaDB test database.
        group["hosts"][DB_HOST].pop("saveos_agent_databases", None)
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path

    def repository_dir(self, host: str) -> Path:
        """The host's repository as the controller sees it: the server's overlay layer."""
        return self.lab.host_dir(self.server) / "upper" / "srv" / "saveos-repos" / host

    def repository_files(self, host: str) -> dict[str, str]:
        """sha256 of every file of the host's repository on the server, by relative path."""
        root = self.repository_dir(host)
        return {
            str(p.relative_to(root)): self.sha256(p)
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("lock")
        }

    @staticmethod
    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def lab_ssh_stdin(self, host: str, command: str, stdin: bytes) -> subprocess.CompletedProcess:
        """Like sh(), with bytes on the command's stdin (secrets stay off argv)."""
        entry = next(h for h in self.lab.hosts() if h.name == host)
        argv = [
            "ssh", "-i", str(self.lab.key_path), "-p", str(entry.port),
            "-o", f"UserKnownHostsFile={self.lab.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            f"root@{entry.address}", command,
        ]  # fmt: skip
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=300)

    def borg_on_copy(
        self, host: str, copy: Path, *args: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        """borg on the controller against a copy of the host's repository, with its escrow."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        env.update(
            BORG_BASE_DIR=str(copy.parent / f"{copy.name}-borg"),
            BORG_PASSCOMMAND=f"cat {self.escrow / host / 'passphrase'}",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_EXIT_CODES="legacy",
        )
        return subprocess.run(
            ["borg", *args], env=env, capture_output=True, text=True, timeout=600, cwd=cwd
        )

    def copy_repository(self, host: str, dest: Path) -> Path:
        shutil.copytree(self.repository_dir(host), dest, symlinks=True)
        return dest


@pytest.fixture(scope="package")
def repo_fleet(tmp_path_factory) -> RepoFleet:
    """lab1..lab3 + repo1, API on PostgreSQL, the deploy playbook run once (servers first)."""
    with lab_fleet(tmp_path_factory, RepoFleet, REPO_LAB_PORT, repo_servers=1, tls=True) as fleet:
        for host in RepoFleet.hosts:
            made = fleet.sh(
                host, f"mkdir -p {SOURCES} && echo {host} > {SOURCES}/host && "
                f"head -c 300000 /dev/urandom > {SOURCES}/random.bin && cp -r /etc/ssh {SOURCES}/"
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
        deployed = fleet.playbook("deploy.yml")
        assert deployed.returncode == 0, deployed.stdout[-5000:] + deployed.stderr[-3000:]
        fleet.first_deploy = deployed.stdout
        yield fleet
