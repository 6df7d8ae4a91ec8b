"""Database dumps end to end on a lab host, against real servers: the machine's PostgreSQL and
MariaDB, and a private PostgreSQL cluster with password authentication (for `all`).

One module-scoped lab host and API: deploy once (at -vvv, for the secrets checks), back up,
drop, `saveos restore --database`, compare a checksum of the rows; drills through scratch
databases; then the failures (refused credentials, a hook that times out, a dump killed
half-way), each leaving no FIFO or temp file behind and the files still reported."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cli_support
import pytest
import yaml
from ansible_support import ansible_env, explain, playbook
from conftest import ApiServer, lab_net, require_root
from db_support import MariaDB, Postgres, PrivateCluster

from saveos_lab.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.borg]

HOST = "lab1"
# Named per run: two runs on this machine must never drop or re-password each other's.
RUN = uuid.uuid4().hex[:8]
PG_DB = f"saveos_t22_pg_{RUN}"
PG_USER = f"saveos_t22_pguser_{RUN}"
MY_DB = f"saveos_t22_my_{RUN}"
MY_USER = f"saveos_t22_my_{RUN}"
ALL_DBS = ("saveos_t22_all_a", "saveos_t22_all_b")
PORT_BASE = int(os.environ.get("SAVEOS_TEST_PORT_BASE", "20000"))


class DbLab:
    def __init__(self, lab, api, work, cluster):
        self.lab, self.api, self.work, self.cluster = lab, api, work, cluster
        self.pg, self.my = Postgres(), MariaDB()
        self.pg_password = "pgpw-" + secrets.token_urlsafe(18)
        self.my_password = "mypw-" + secrets.token_urlsafe(18) + ':\\"q'
        self.inventory = work / "inventory.yml"
        self.outputs: list[str] = []
        self.sums: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        return ansible_env(
            {
                "SAVEOS_API_URL": self.api.url,
                "SAVEOS_ADMIN_TOKEN": self.api.admin_token,
                "SAVEOS_DATA_DIR": str(self.work / "data"),
                "SAVEOS_ESCROW_DIR": str(self.work / "escrow"),
                # the passwords reach the role from the environment, never from extravars
                "T22_PG_PASSWORD": self.pg_password,
                "T22_MY_PASSWORD": self.my_password,
                "T22_CLUSTER_PASSWORD": self.cluster.password,
                "COLUMNS": "200",
            }
        )

    def databases(self, my_password_env: str = "T22_MY_PASSWORD") -> list[dict]:
        env = "{{{{ lookup('ansible.builtin.env', '{}') }}}}"
        return [
            {"type": "postgresql", "name": PG_DB, "host": "127.0.0.1", "port": 5432,
             "user": PG_USER, "password": env.format("T22_PG_PASSWORD")},
            {"type": "mariadb", "name": MY_DB, "host": "127.0.0.1", "port": 3306,
             "user": MY_USER, "password": env.format(my_password_env)},
            {"type": "postgresql", "name": "all", "host": "127.0.0.1", "port": self.cluster.port,
             "user": "postgres", "password": env.format("T22_CLUSTER_PASSWORD"),
             "options": ["--no-comments"]},
        ]  # fmt: skip

    def write_inventory(self, **extra) -> None:
        inventory = yaml.safe_load(self.lab.inventory_path.read_text())
        group = inventory["all"]["children"]["lab"]
        group["vars"] = {
            "saveos_agent_sources": ["/srv/data"],
            "saveos_agent_heartbeat_interval_s": 30,
            "saveos_agent_databases": self.databases(),
            **extra,
        }
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def deploy(self, *args: str) -> None:
        result = playbook(self.inventory, "playbooks/deploy.yml", *args, env=self.env)
        self.outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, explain(result)

    def saveos(self, *args: str) -> subprocess.CompletedProcess:
        result = cli_support.saveos(*args, env=self.env, timeout=600)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def sh(self, command: str) -> subprocess.CompletedProcess:
        return self.lab.ssh(HOST, command)

    def agent(self, *args: str) -> tuple[int, dict]:
        r = self.sh("/usr/local/bin/saveos-agent --json " + " ".join(args))
        self.outputs.append(r.stdout + r.stderr)
        try:
            return r.returncode, json.loads(r.stdout.splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise AssertionError(f"{args}: rc={r.returncode}\n{r.stdout}\n{r.stderr}") from None

    def snapshots(self) -> list[dict]:
        listed = self.saveos("snapshots", HOST, "--json")
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)["snapshots"]

    def left_behind(self) -> list[str]:
        """FIFOs and dump leftovers on the host (/tmp is shared with the machine: only ours)."""
        probe = self.sh(
            "ls -A /var/lib/saveos/dumps 2>/dev/null; find /var/lib/saveos /var/tmp -maxdepth 4 "
            "\\( -type p -o -name '*.pgdump' -o -name 'saveos-drill-db-*' \\) 2>/dev/null; "
            "find /tmp -maxdepth 1 -name 'saveos-drill-db-*'"
        )
        return probe.stdout.split()


@pytest.fixture(scope="module")
def dblab(tmp_path_factory):
    require_root()
    work = tmp_path_factory.mktemp("dblab")
    work.chmod(0o700)
    # the postgres user cannot enter pytest's 0700 tmp dirs
    cluster = PrivateCluster(Path(tempfile.mkdtemp(prefix="saveos-t22-pg-", dir="/var/tmp")),
                             PORT_BASE + 432)  # fmt: skip
    api = ApiServer(f"sqlite:///{work / 'api.db'}", work / "api")
    lab = Lab(work / "lab", net=lab_net())
    t = DbLab(lab, api, work, cluster)
    try:
        cluster.start()
        for name in ALL_DBS:
            t.sums[name] = cluster.admin.make(name, rows=500)
        cluster.admin.sql("CREATE ROLE saveos_t22_global LOGIN")  # only pg_dumpall has it
        t.pg.drop(PG_DB)
        t.pg.sql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN "
            f'CREATE ROLE "{PG_USER}" LOGIN CREATEDB; END IF; END$$;'
            f"ALTER ROLE \"{PG_USER}\" PASSWORD '{t.pg_password}'"
        )
        t.sums[PG_DB] = t.pg.make(PG_DB, owner=PG_USER)
        t.my.user(MY_USER, t.my_password.replace("\\", "\\\\").replace("'", "\\'"),
                  [MY_DB.replace("_", "\\_") + "%", "saveos\\_drill\\_%"])  # fmt: skip
        t.sums[MY_DB] = t.my.make(MY_DB)
        api.start()
        lab.up(1)
        assert t.sh("mkdir -p /srv/data && echo files > /srv/data/f").returncode == 0
        t.write_inventory()
        t.deploy("-vvv")
        yield t
    finally:
        lab.down()
        api.stop()
        cluster.stop()
        for name in (PG_DB, PG_DB + "_copy"):
            t.pg.drop(name)
        for name in (MY_DB, MY_DB + "_copy"):
            t.my.drop(name)
        t.pg.sql(f'DROP ROLE IF EXISTS "{PG_USER}"')
        t.my.drop_user(MY_USER)


def test_dumps_restore_identical_rows_and_refuse_to_overwrite(dblab):
    t = dblab
    backup = t.saveos("backup", "-i", str(t.inventory))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    snap = t.snapshots()[0]
    assert snap["exit_status"] == "ok", snap["message"]
    dumps = {(d["type"], d["name"]): d for d in snap["databases"]}
    expected = {("postgresql", PG_DB), ("mariadb", MY_DB), ("postgresql", "globals"),
                ("postgresql", "postgres"), *(("postgresql", n) for n in ALL_DBS)}  # fmt: skip
    assert set(dumps) == expected
    assert all(d["status"] == "ok" and d["size"] > 0 for d in dumps.values()), dumps
    assert dumps[("postgresql", PG_DB)]["format"] == "custom"
    assert snap["nfiles"] >= 1 and t.left_behind() == []
    table = t.saveos("snapshots", HOST)
    assert f"mariadb/{MY_DB}" in table.stdout, table.stdout

    # drop each, restore through SaveOS, same rows
    t.pg.drop(PG_DB)
    t.my.drop(MY_DB)
    t.cluster.admin.drop(ALL_DBS[1])
    for name in (PG_DB, f"mariadb/{MY_DB}", ALL_DBS[1]):
        restored = t.saveos("restore", HOST, "-i", str(t.inventory), "--database", name)
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert t.pg.checksum(PG_DB) == t.sums[PG_DB]
    assert t.my.checksum(MY_DB) == t.sums[MY_DB]
    assert t.cluster.admin.checksum(ALL_DBS[1]) == t.sums[ALL_DBS[1]]
    # the globals of `all` (pg_dumpall --globals-only) bring a dropped role back
    t.cluster.admin.sql("DROP ROLE saveos_t22_global")
    code, out = t.agent("restore", "latest", "--database", "globals")
    assert code == 0, out
    roles = t.cluster.admin.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'saveos_t22_%'")
    assert roles == "saveos_t22_global"
    # the restored tables keep their owner
    owner = t.pg.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'items'", PG_DB)
    assert owner == PG_USER

    # a non-empty database is never overwritten without --into or --force
    again = t.saveos("restore", HOST, "-i", str(t.inventory), "--database", MY_DB)
    assert again.returncode == 2
    assert "exists and is not empty" in again.stdout + again.stderr
    copy = t.saveos(
        "restore", HOST, "-i", str(t.inventory), "--database", MY_DB, "--into", MY_DB + "_copy"
    )
    assert copy.returncode == 0, copy.stdout + copy.stderr
    assert t.my.checksum(MY_DB + "_copy") == t.sums[MY_DB]
    t.pg.sql("DELETE FROM items WHERE id > 10", PG_DB)
    code, out = t.agent("restore", "latest", "--database", PG_DB, "--force")
    assert code == 0 and out["replaced"] is True, out
    assert t.pg.checksum(PG_DB) == t.sums[PG_DB]
    assert t.left_behind() == []


def test_restore_all_loads_every_dump_of_the_archive_or_nothing(dblab):
    t = dblab
    inv = ("-i", str(t.inventory))
    # bad input: one sentence, exit 1, nothing run on the host
    for args, words in (
        (("--database", "all", "--into", "x"), "--into names one database"),
        (("--database", "x;y"), "give all, a database NAME"),
        (("--database", "oracle/x"), "TYPE/NAME with TYPE one of"),
    ):
        bad = t.saveos("restore", HOST, *inv, *args)
        assert bad.returncode == 1 and words in bad.stdout + bad.stderr, bad.stdout + bad.stderr
        assert "Traceback" not in bad.stdout + bad.stderr
    # every target exists with rows: refused as a whole, each named
    refused = t.saveos("restore", HOST, *inv, "--database", "all")
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "nothing was restored" in said, said
    assert f"mariadb database {MY_DB} exists" in said and f"database {PG_DB} exists" in said
    # some gone, one changed: --force brings every one back as the archive has it
    t.pg.drop(PG_DB)
    t.my.drop(MY_DB)
    t.cluster.admin.drop(ALL_DBS[0])
    t.cluster.admin.sql("DELETE FROM items WHERE id > 5", ALL_DBS[1])
    t.cluster.admin.sql("DROP ROLE saveos_t22_global")
    done = t.saveos("restore", HOST, *inv, "--database", "all", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restored every database dump of" in done.stdout
    assert t.pg.checksum(PG_DB) == t.sums[PG_DB]
    assert t.my.checksum(MY_DB) == t.sums[MY_DB]
    for name in ALL_DBS:
        assert t.cluster.admin.checksum(name) == t.sums[name]
    roles = t.cluster.admin.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'saveos_t22_%'")
    assert roles == "saveos_t22_global"  # the globals came first
    owner = t.pg.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'items'", PG_DB)
    assert owner == PG_USER
    assert t.left_behind() == []


def test_drill_restores_every_database_into_a_scratch_one_and_drops_it(dblab):
    t = dblab
    code, out = t.agent("drill")
    assert code == 0, out
    results = {(d["type"], d["name"]): d for d in out["databases"]}
    assert results[("mariadb", MY_DB)]["result"] == "pass"
    assert results[("postgresql", PG_DB)]["value"] == "2"  # a table and a view
    assert all(r["result"] == "pass" for r in results.values()), results
    assert ("postgresql", "globals") not in results
    assert "databases restored and queried" in out["message"]
    assert t.pg.databases("saveos_drill_%") == [] and t.my.databases("saveos\\_drill\\_%") == []
    assert t.cluster.admin.databases("saveos_drill_%") == []
    status = json.loads(t.saveos("status", "--json").stdout)
    assert status["agents"][0]["last_drill_result"] == "pass"
    assert t.left_behind() == []


def test_dump_killed_half_way_fails_the_backup_and_no_secret_is_visible(dblab):
    t = dblab
    # hold a lock so pg_dump waits, mid-dump, where it can be seen and killed
    locker = subprocess.Popen(
        ["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", PG_DB],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    locker.stdin.write("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;\n")
    locker.stdin.flush()
    pool = ThreadPoolExecutor(1)
    backup = pool.submit(t.lab.ssh, HOST, "/usr/local/bin/saveos-agent --json backup", 300)
    seen: list[str] = []
    try:
        pid = None
        for _ in range(300):
            pids = subprocess.run(["pgrep", "-f", f"pg_dump .*{PG_DB}"], capture_output=True,
                                  text=True).stdout.split()  # fmt: skip
            if pids:
                pid = pids[0]
                break
            time.sleep(0.1)
        assert pid, "pg_dump never started"
        # R7: every argv and environment on the machine while the dump runs
        for proc in os.listdir("/proc"):
            if proc.isdigit():
                for name in ("cmdline", "environ"):
                    with contextlib.suppress(OSError):
                        raw = Path(f"/proc/{proc}/{name}").read_bytes()
                        seen.append(raw.decode("utf-8", "replace"))
        os.kill(int(pid), 9)
        done = backup.result(timeout=300)
    finally:
        locker.stdin.close()
        locker.wait(30)
        pool.shutdown()
    result = json.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 2 and result["status"] == "error", done.stdout + done.stderr
    assert f"database postgresql/{PG_DB}: pg_dump killed by signal 9" in result["message"]
    assert result["archive"] and result["stats"]["nfiles"] >= 1
    assert t.left_behind() == []
    assert t.snapshots()[0]["databases"][0]["status"] == "error"
    passwords = {"pg": t.pg_password, "mariadb": t.my_password, "cluster": t.cluster.password}
    text = "\n".join(seen)
    assert [k for k, v in passwords.items() if v in text] == []
    assert len(seen) > 20


def test_database_passwords_in_no_log_output_or_world_readable_file(dblab):
    t = dblab
    passwords = {"pg": t.pg_password, "mariadb": t.my_password, "cluster": t.cluster.password}
    assert any("ESTABLISH SSH CONNECTION" in o for o in t.outputs)  # the -vvv deploy is there
    logs = t.sh("cat /var/log/saveos/*")
    assert logs.returncode == 0 and "dumping postgresql" in logs.stdout
    sources = {"ansible/cli": "\n".join(t.outputs), "agent logs": logs.stdout,
               "agent.json": t.sh("cat /etc/saveos/agent.json").stdout}  # fmt: skip
    leaks = [f"{k} in {where}" for where, text in sources.items()
             for k, v in passwords.items() if v in text]  # fmt: skip
    assert leaks == []
    modes = t.sh("stat -c '%n %a %U' /etc/saveos/databases /etc/saveos/databases/*").stdout
    assert modes.split("\n")[0].endswith(" 700 root")
    files = [line for line in modes.splitlines()[1:] if line]
    assert len(files) == 3 and all(line.endswith(" 600 root") for line in files), modes
    # nothing readable by others on the host holds a password
    for key, value in passwords.items():
        b64 = base64.b64encode(value.encode()).decode()
        found = t.sh(
            "find /etc /var /opt /srv /root /tmp -xdev -type f -perm -o+r -size -2M "
            f'-exec grep -lF -- "$(echo {b64} | base64 -d)" {{}} + 2>/dev/null'
        )
        assert found.stdout.strip() == "", f"{key}: {found.stdout}"


def test_refused_credentials_and_hook_timeout_fail_the_backup_files_still_reported(dblab):
    t = dblab
    t.write_inventory(
        saveos_agent_hooks={"before_backup": [{"command": "sleep 30", "timeout_s": 1}]}
    )
    inventory = yaml.safe_load(t.inventory.read_text())
    group_vars = inventory["all"]["children"]["lab"]["vars"]
    group_vars["saveos_agent_databases"] = t.databases(my_password_env="T22_PG_PASSWORD")
    t.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    t.deploy()  # the module's last test: nothing needs the good config back
    code, out = t.agent("backup")
    assert code == 2 and out["status"] == "error", out
    message = out["message"]
    assert "hook before_backup[0] timed out after 1 s" in message
    assert f"database mariadb/{MY_DB}: " in message and "Access denied" in message, message
    snap = t.snapshots()[0]
    assert snap["exit_status"] == "error" and snap["archive"] and snap["nfiles"] >= 1
    states = {d["name"]: d["status"] for d in snap["databases"]}
    assert states[MY_DB] == "error" and states[PG_DB] == "ok"
    assert "Access denied" in next(d for d in snap["databases"] if d["name"] == MY_DB)["message"]
    assert t.left_behind() == []
    # the failed dump is marked in the archive: a restore refuses it
    code, refused = t.agent("restore", snap["archive"], "--database", MY_DB, "--into", "x_y")
    assert code == 2 and "did not finish" in refused["message"], refused
    status = json.loads(t.saveos("status", "--json").stdout)
    assert status["agents"][0]["status"] == "failing"
