"""Real database servers for the dump tests: the machine's PostgreSQL and MariaDB (databases
and users named saveos_t22_*, so other work on the machine is never touched), and a private
PostgreSQL cluster (own data dir and port, password authentication over TCP) for `all` and for
refused credentials."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PREFIX = "saveos_t22_"


def _run(argv: list[str], sql: str = "", env: dict | None = None) -> str:
    proc = subprocess.run(
        argv, input=sql, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"{argv[0]} failed rc={proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout.strip()


class Postgres:
    """psql as the superuser against one server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432, env: dict | None = None):
        self.host, self.port, self.env = host, port, env or {}

    def sql(self, sql: str, db: str = "postgres") -> str:
        argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host]
        return _run([*argv, "-p", str(self.port), "-U", "postgres", "-d", db], sql, self.env)

    def databases(self, like: str = PREFIX + "%") -> list[str]:
        return self.sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{like}'").split()

    def drop(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def make(self, name: str, rows: int = 2000, owner: str | None = None) -> str:
        """A database with known rows; returns its checksum."""
        self.drop(name)
        self.sql(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
        self.sql(
            "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);"
            f"INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;"
            "CREATE VIEW few AS SELECT * FROM items WHERE id < 10;",
            name,
        )
        if owner:
            self.sql(f'ALTER TABLE items OWNER TO "{owner}"; ALTER VIEW few OWNER TO "{owner}"',
                     name)  # fmt: skip
        return self.checksum(name)

    def checksum(self, name: str) -> str:
        return self.sql(
            "SELECT count(*) || ':' || md5(string_agg(id || '=' || v, ',' ORDER BY id)) FROM items",
            name,
        )


class MariaDB:
    def __init__(self, host: str = "127.0.0.1", port: int = 3306):
        self.host, self.port = host, port

    def sql(self, sql: str, db: str | None = None) -> str:
        argv = ["mariadb", f"--host={self.host}", f"--port={self.port}", "--protocol=TCP"]
        return _run([*argv, "--user=root", "-N", "-B", *([db] if db else [])], sql)

    def databases(self, like: str = PREFIX + "%") -> list[str]:
        return self.sql(f"SHOW DATABASES LIKE '{like}'").split()

    def drop(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")

    def make(self, name: str, rows: int = 2000) -> str:
        self.drop(name)
        self.sql(f"CREATE DATABASE `{name}`")
        self.sql(
            "CREATE TABLE items (id int PRIMARY KEY, v varchar(64) NOT NULL);"
            f"INSERT INTO items SELECT seq, md5(seq) FROM seq_1_to_{rows};",
            name,
        )
        return self.checksum(name)

    def checksum(self, name: str) -> str:
        return self.sql(
            "SET SESSION group_concat_max_len = 1000000;"
            "SELECT concat(count(*), ':', md5(group_concat(concat(id, '=', v) ORDER BY id))) "
            "FROM items",
            name,
        )

    def user(self, name: str, password: str, grants: list[str]) -> None:
        self.sql(f"DROP USER IF EXISTS '{name}'@'127.%'")
        self.sql(f"CREATE USER '{name}'@'127.%' IDENTIFIED BY '{password}'")
        for pattern in grants:
            self.sql(f"GRANT ALL PRIVILEGES ON `{pattern}`.* TO '{name}'@'127.%'")

    def drop_user(self, name: str) -> None:
        self.sql(f"DROP USER IF EXISTS '{name}'@'127.%'")


class PrivateCluster:
    """A PostgreSQL cluster of the test's own on 127.0.0.1:port: scram passwords over TCP,
    trust over its private socket for the test's own admin work."""

    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.data = root / "data"
        # ':' and '\' are what a pgpass line escapes: libpq itself reads the role's file back
        self.password = "pg-" + secrets.token_urlsafe(24) + ":\\x"
        self.admin = Postgres(host=str(root), port=port)

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, timeout=120)  # fmt: skip

    def start(self) -> PrivateCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        shutil.chown(self.root, "postgres")
        shutil.chown(pwfile, "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "log"),
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        for _ in range(50):
            if subprocess.run(["pg_isready", "-h", str(self.root), "-p", str(self.port)],
                              capture_output=True).returncode == 0:  # fmt: skip
                return self
            time.sleep(0.1)
        raise RuntimeError("private PostgreSQL did not start")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
                 "-m", "immediate", "stop"], capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
