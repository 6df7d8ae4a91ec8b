"""Database dumps and hooks in the agent, without a lab: config validation, argv builders (no
secret in argv or environment), hooks with timeouts, and SQLite dumps streamed through a FIFO
into real borg, restored and drilled (PostgreSQL and MariaDB: tests/test_databases_lab.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from agent_support import AgentHost, write_private
from saveos_agent import databases as dbs
from saveos_agent import dumps, hooks
from saveos_agent.errors import AgentError


def _validate(entries, check_paths=False):
    return dbs.validate(entries, check_paths=check_paths)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "oracle", "name": "x"}, "databases[0].type' must be one of"),
        ({"type": "postgresql", "name": "a b"}, "databases[0].name' must be a database name"),
        ({"type": "postgresql", "name": "x", "format": "directory"}, "custom, plain, tar"),
        ({"type": "mariadb", "name": "x", "format": "custom"}, "must be one of sql"),
        ({"type": "sqlite", "name": "x"}, "databases[0].path' (the database file"),
        ({"type": "sqlite", "name": "all", "path": "/x.db"}, "all has no meaning for sqlite"),
        ({"type": "postgresql", "name": "x", "port": 70000}, "must be a port number"),
        ({"type": "postgresql", "name": "x", "password": "p"}, "unknown config key 'databases[0]"),
        ({"type": "mariadb", "name": "x", "host": "h", "socket": "/s"}, "host and socket are"),
        ({"type": "mariadb", "name": "x", "credentials_file": "rel"}, "must be an absolute path"),
        ({"type": "mariadb", "name": "x", "options": "--opt"}, "must be a list of strings"),
    ],
)
def test_config_rejects_bad_database_entries_naming_the_key(entry, message):
    with pytest.raises(AgentError) as err:
        _validate([entry])
    assert message in err.value.message


def test_config_rejects_a_duplicate_and_a_credentials_file_others_can_read(tmp_path):
    with pytest.raises(AgentError, match="postgresql/x is declared twice"):
        _validate([{"type": "postgresql", "name": "x"}, {"type": "postgresql", "name": "x"}])
    cred = tmp_path / "c.cnf"
    cred.write_text("[client]\npassword=x\n")
    cred.chmod(0o644)
    with pytest.raises(AgentError, match="accessible by group/others"):
        _validate([{"type": "mariadb", "name": "x", "credentials_file": str(cred)}], True)
    cred.chmod(0o600)
    (db,) = _validate([{"type": "mariadb", "name": "x", "credentials_file": str(cred)}], True)
    assert db.format == "sql" and db.credentials_file == str(cred)


def test_dump_argv_carry_no_secret_and_env_names_only_the_file(monkeypatch):
    pg, my = _validate(
        [
            {"type": "postgresql", "name": "app", "host": "db", "port": 5433, "user": "u",
             "credentials_file": "/etc/saveos/databases/postgresql-app.pgpass"},
            {"type": "mariadb", "name": "shop", "socket": "/run/mysqld/mysqld.sock",
             "user": "u", "credentials_file": "/etc/saveos/databases/mariadb-shop.cnf",
             "options": ["--hex-blob"]},
        ]
    )  # fmt: skip
    assert dbs.dump_argv(dbs.DumpItem(pg, "app")) == (
        "pg_dump", "--no-password", "--host", "db", "--port", "5433", "--username", "u",
        "--format=c", "--", "app",
    )  # fmt: skip
    argv = dbs.dump_argv(dbs.DumpItem(my, "shop"))
    # the option file must come first for mariadb-dump to read it
    assert argv[:2] == (
        "mariadb-dump",
        "--defaults-extra-file=/etc/saveos/databases/mariadb-shop.cnf",
    )
    assert argv[-3:] == ("--hex-blob", "--", "shop") and "--single-transaction" in argv
    monkeypatch.setenv("PGPASSWORD", "leak")
    monkeypatch.setenv("MYSQL_PWD", "leak")
    env = dbs.env(pg)
    assert env["PGPASSFILE"] == pg.credentials_file
    assert "PGPASSWORD" not in env and "MYSQL_PWD" not in dbs.env(my)
    assert "PGPASSFILE" not in dbs.env(my)
    peer = _validate([{"type": "postgresql", "name": "all", "run_as": "postgres"}])[0]
    assert dbs.list_argv(peer)[:4] == ("runuser", "-u", "postgres", "--")
    assert dbs.dump_argv(dbs.DumpItem(peer, "globals", kind="globals"))[-1] == "--globals-only"
    assert dbs.DumpItem(peer, "globals", kind="globals").file_name == "postgresql+globals.sql"


def test_restore_sql_quotes_only_checked_names():
    (pg,) = _validate([{"type": "postgresql", "name": "x"}])
    assert dbs.create_sql(pg, "new_db") == 'CREATE DATABASE "new_db";'
    with pytest.raises(AgentError, match="not one SaveOS handles"):
        dbs.drop_sql(pg, 'x"; DROP DATABASE y; --')
    assert dbs.load_argv(pg, "custom", "t")[:1] == ("pg_restore",)
    assert dbs.load_argv(pg, "plain", "t")[0] == "psql"


# ---- hooks -----------------------------------------------------------------------------------


def test_hooks_validate_and_report_failure_and_timeout(tmp_path):
    with pytest.raises(AgentError, match="unknown config key 'hooks.before'"):
        hooks.validate({"before": []})
    with pytest.raises(AgentError, match="timeout_s' must be an integer >= 1"):
        hooks.validate({"after_backup": [{"command": "true", "timeout_s": 0}]})
    marker = tmp_path / "child-alive"
    parsed = hooks.validate(
        {
            "before_backup": ["echo ok", {"command": "echo bad >&2; exit 3"}],
            "on_error": [
                # the child would touch the marker after the timeout: the whole group dies
                {"command": f"(sleep 3; touch {marker}) & sleep 30", "timeout_s": 1}
            ],
        }
    )
    assert hooks.run_phase(parsed, "before_backup") == [
        "hook before_backup[1] failed (rc 3): echo bad >&2; exit 3: bad"
    ]
    started = time.monotonic()
    (message,) = hooks.run_phase(parsed, "on_error")
    assert message.startswith("hook on_error[0] timed out after 1 s (killed)")
    assert time.monotonic() - started < 10
    time.sleep(3)
    assert not marker.exists()
    assert hooks.run_phase(parsed, "after_backup") == []


# ---- SQLite through real borg ------------------------------------------------------------------


def _sqlite(path: Path, rows: int = 300) -> str:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"v{i}" * 5) for i in range(rows)])
    con.commit()
    con.close()
    return _digest(path)


def _digest(path: Path) -> str:
    con = sqlite3.connect(path)
    rows = con.execute("SELECT id, v FROM items ORDER BY id").fetchall()
    con.close()
    return f"{len(rows)}:{hash(tuple(rows))}"


@pytest.fixture
def dbhost(tmp_path, agent_pyz):
    live = tmp_path / "live"
    live.mkdir()
    h = AgentHost(tmp_path, agent_pyz, dump_dir=str(tmp_path / "dumps"))
    (h.src / "file.txt").write_text("files too\n")
    os.mkfifo(h.src / "stray.fifo")  # a FIFO in the sources: --read-special must skip it
    h.digest = _sqlite(live / "app.sqlite")
    h.write_config(
        databases=[
            {
                "type": "sqlite",
                "name": "app",
                "path": str(live / "app.sqlite"),
                "drill_query": "SELECT count(*) > 100 FROM items",
            }
        ],  # fmt: skip
        hooks={"before_backup": [{"command": f"echo $SAVEOS_ARCHIVE > {tmp_path}/hook.out"}]},
    )
    h.init()
    return h


@pytest.mark.borg
def test_sqlite_dump_streams_into_the_archive_restores_and_drills(dbhost, tmp_path):
    rc, out = dbhost.json("backup", timeout=60)
    assert rc == 0, out
    assert (tmp_path / "hook.out").read_text().strip() == out["archive"]
    assert not (tmp_path / "dumps").exists()  # FIFOs gone
    listing = dbhost.borg(
        "list", "--format", "{path} {size}{NL}", f"{dbhost.repo}::{out['archive']}"
    )
    sizes = dict(line.rsplit(" ", 1) for line in listing.stdout.splitlines())
    dump_path = str(tmp_path / "dumps" / "sqlite-app.sql").lstrip("/")
    assert int(sizes[dump_path]) > 1000
    assert not any(p.endswith("stray.fifo") for p in sizes)
    manifest = dbhost.borg("extract", "--stdout", f"{dbhost.repo}::{out['archive']}",
                           str(tmp_path / "dumps" / "manifest.json").lstrip("/"))  # fmt: skip
    (record,) = json.loads(manifest.stdout)["databases"]
    assert record["status"] == "ok" and record["size"] == int(sizes[dump_path])

    # restore: refuses the live (non-empty) file, loads into a new one, identical rows
    rc, refused = dbhost.json("restore", "latest", "--database", "app")
    assert rc == 2 and "exists and is not empty" in refused["message"]
    target = tmp_path / "restored.sqlite"
    rc, done = dbhost.json("restore", "latest", "--database", "app", "--into", str(target))
    assert rc == 0, done
    assert _digest(target) == dbhost.digest

    rc, drill = dbhost.json("drill")
    assert rc == 0, drill
    assert drill["databases"][0]["result"] == "pass" and drill["databases"][0]["value"] == "1"


@pytest.mark.borg
def test_a_failing_dump_fails_the_backup_keeps_the_files_and_leaves_nothing(dbhost, tmp_path):
    dbhost.write_config(
        databases=[{"type": "sqlite", "name": "gone", "path": str(tmp_path / "missing.db")}],
        hooks={"on_error": [{"command": f'echo "$SAVEOS_ERROR" > {tmp_path}/err.out'}]},
    )
    rc, out = dbhost.json("backup", timeout=60)
    assert rc == 2 and out["status"] == "error", out
    assert out["message"].startswith("database sqlite/gone: ")
    assert "unable to open database" in out["message"]
    assert out["archive"] and out["stats"]["nfiles"] >= 2
    assert "database sqlite/gone" in (tmp_path / "err.out").read_text()
    assert not (tmp_path / "dumps").exists()
    # nothing pruned on a failed backup's account, and the dump is marked as cut short
    rc, refused = dbhost.json("restore", out["archive"], "--database", "gone", "--into",
                              str(tmp_path / "x.db"))  # fmt: skip
    assert rc == 2 and "did not finish" in refused["message"]


@pytest.mark.borg
def test_borg_failing_before_reading_the_fifos_does_not_hang(dbhost, tmp_path):
    dbhost.write_config(repository=str(tmp_path / "no-such-repo"))
    started = time.monotonic()
    rc, out = dbhost.json("backup", timeout=60)
    assert rc == 2 and out["archive"] == ""
    assert time.monotonic() - started < 30
    assert not (tmp_path / "dumps").exists()


def test_special_files_finds_fifos_and_links_to_devices_but_not_the_dump_dir(tmp_path):
    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "f")
    os.symlink("/dev/null", tmp_path / "a" / "null")
    (tmp_path / "dumps").mkdir()
    os.mkfifo(tmp_path / "dumps" / "mine")
    (tmp_path / "a" / "plain").write_text("x")
    found = dumps.special_files([str(tmp_path)], str(tmp_path / "dumps"))
    assert found == [str(tmp_path / "a" / "f"), str(tmp_path / "a" / "null")]


def test_credentials_never_reach_argv_of_a_real_dump(tmp_path):
    """A MariaDB dump with a password file: /proc shows no password while it runs."""
    secret = "pw-" + os.urandom(8).hex()
    cred = write_private(tmp_path / "my.cnf", f"[client]\npassword={secret}\n")
    (db,) = _validate([{"type": "mariadb", "name": "saveos_t22_none", "host": "127.0.0.1",
                        "user": "saveos_t22_nobody", "credentials_file": str(cred)}])  # fmt: skip
    argv = dbs.dump_argv(dbs.DumpItem(db, db.name))
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=dbs.env(db), timeout=60)
    assert proc.returncode != 0 and "using password: YES" in proc.stderr  # the file was read
    assert secret not in " ".join(argv) and secret not in json.dumps(dbs.env(db))


@pytest.mark.borg
def test_restore_all_loads_every_dump_or_nothing(dbhost, tmp_path):
    live = tmp_path / "live"
    second = _sqlite(live / "notes.sqlite", rows=120)
    dbhost.write_config(
        databases=[
            {"type": "sqlite", "name": "app", "path": str(live / "app.sqlite")},
            {"type": "sqlite", "name": "notes", "path": str(live / "notes.sqlite")},
        ]
    )
    rc, out = dbhost.json("backup", timeout=60)
    assert rc == 0, out
    # bad input: one clear sentence, nothing touched
    rc, bad = dbhost.json("restore", "latest", "--database", "pg/x")
    assert rc == 2 and "give all, a database NAME" in bad["message"], bad
    rc, bad = dbhost.json("restore", "latest", "--database", "all", "--into", "/tmp/x.db")
    assert rc == 2 and "--into names one database" in bad["message"], bad
    # both live files hold rows: all is refused as a whole, naming each
    rc, refused = dbhost.json("restore", "latest", "--database", "all")
    assert rc == 2 and "nothing was restored" in refused["message"], refused
    assert str(live / "app.sqlite") in refused["message"]
    assert str(live / "notes.sqlite") in refused["message"]
    # one emptied, one changed: still all or nothing
    (live / "notes.sqlite").unlink()
    rc, refused = dbhost.json("restore", out["archive"], "--database", "all")
    assert rc == 2 and not (live / "notes.sqlite").exists(), refused
    con = sqlite3.connect(live / "app.sqlite")
    con.execute("DELETE FROM items WHERE id < 100")
    con.commit()
    con.close()
    assert _digest(live / "app.sqlite") != dbhost.digest
    rc, done = dbhost.json("restore", out["archive"], "--database", "all", "--force")
    assert rc == 0, done
    assert [(r["database"], r["replaced"]) for r in done["restored"]] == [
        ("app", True), ("notes", False)
    ]  # fmt: skip
    assert _digest(live / "app.sqlite") == dbhost.digest
    assert _digest(live / "notes.sqlite") == second
    assert done["message"].startswith(f"restored 2 dumps from {out['archive']}: sqlite/app")


@pytest.mark.borg
def test_restore_all_refuses_an_archive_with_a_dump_cut_short(dbhost, tmp_path):
    dbhost.write_config(
        databases=[
            {"type": "sqlite", "name": "app", "path": str(tmp_path / "live" / "app.sqlite")},
            {"type": "sqlite", "name": "gone", "path": str(tmp_path / "missing.db")},
        ]
    )
    rc, out = dbhost.json("backup", timeout=60)
    assert rc == 2 and out["archive"], out
    rc, refused = dbhost.json("restore", out["archive"], "--database", "all", "--force")
    assert rc == 2 and "sqlite/gone" in refused["message"], refused
    assert "did not finish: nothing was restored" in refused["message"]
    rc, none = dbhost.json("restore", "latest", "--database", "all")
    assert rc == 2 and "no archive holds a whole dump of every database" in none["message"]
