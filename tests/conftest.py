"""Fixtures shared by every test: real PostgreSQL databases, free ports, a live API server.

Parallel work on one machine: SAVEOS_TEST_LAB_NET picks the loopback /24 the lab tests use
(default 127.0.0), SAVEOS_TEST_PORT_BASE the first port tried for servers.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

# Lab fixtures (lab3) live in tests/lab_fixtures.py.
pytest_plugins = ["lab_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "SAVEOS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _pg_exec(sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


@contextmanager
def _pg_database(prefix: str = "saveos_test", template: str | None = None):
    """A PostgreSQL database of a name of its own (empty, or a copy of `template`), yielded as
    (name, url) and dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _pg_exec(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield name, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    with _pg_database() as (_, url):
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'saveos.db'}"


@pytest.fixture
def api(migrated_db_url, tmp_path):
    """The API in process (tests/api_support.Api), once on SQLite and once on PostgreSQL."""
    from api_support import Api

    api = Api(migrated_db_url, tmp_path / "data")
    yield api
    api.close()


# A database at the migrations' head, made once per session: each `api` test gets a copy of it
# rather than running every migration again (seconds per test; the migrations themselves are
# tested on empty databases through db_url).
@pytest.fixture(scope="session")
def _sqlite_at_head(tmp_path_factory) -> Path:
    from saveos_api import migrations

    path = tmp_path_factory.mktemp("sqlite-head") / "saveos.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_at_head() -> str:
    from saveos_api import migrations

    with _pg_database("saveos_head") as (name, url):
        migrations.upgrade(url)
        yield name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def migrated_db_url(request):
    """Like db_url, a database of the test's own, already at the migrations' head."""
    if request.param == "sqlite":
        yield request.getfixturevalue("migrated_sqlite_url")
    else:
        yield request.getfixturevalue("migrated_pg_url")


@pytest.fixture
def migrated_pg_url(_pg_at_head):
    """Like pg_url, a PostgreSQL database of the test's own, already at the migrations' head."""
    with _pg_database(template=_pg_at_head) as (_, url):
        yield url


@pytest.fixture
def migrated_sqlite_url(_sqlite_at_head, tmp_path):
    """Like sqlite_url, already at the migrations' head."""
    import sqlite3
    from contextlib import closing

    path = tmp_path / "saveos.db"
    with closing(sqlite3.connect(_sqlite_at_head)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)  # a consistent copy, WAL included
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request, tmp_path):
    """Run a test once on SQLite and once on PostgreSQL (marked `pg`: `-m "not pg"` skips it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'saveos.db'}"
    else:
        yield request.getfixturevalue("pg_url")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, verify=True) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1.0, verify=verify).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout}s")
        time.sleep(0.1)


class ApiServer:
    """A real uvicorn process serving saveos_api on loopback; with tls=True over HTTPS with a
    certificate from `saveos ca init` (data_dir/tls/ca.crt is the CA to verify it with)."""

    start_timeout = 60.0  # seconds for /health to answer (20 was too few on a loaded CI machine)

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        port: int | None = None,
        tls: bool = False,
        workers: int = 1,
    ):
        self.database_url = database_url
        self.workers = workers
        self.data_dir = data_dir
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = data_dir / "tls" / "ca.crt"
        self.admin_token = "adm_" + secrets.token_urlsafe(32)
        self.log_path = data_dir / f"api-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None  # how the last stop() found it ended (-9: killed)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SAVEOS_DATABASE_URL=self.database_url,
            SAVEOS_ADMIN_TOKEN=self.admin_token,
            SAVEOS_DATA_DIR=str(self.data_dir),
            SAVEOS_WORKERS=str(self.workers),
        )
        return env

    def start(self) -> ApiServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.tls and not self.ca_file.exists():
            subprocess.run(
                [sys.executable, "-m", "saveos_cli.app", "ca", "init", "--name", "127.0.0.1",
                 "--name", "localhost"],
                env=self.env, check=True, capture_output=True, cwd=REPO_ROOT,
            )  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "saveos_cli.app",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        try:
            wait_http(self.url + "/health", self.start_timeout, verify=self.verify)
        except TimeoutError:
            self.stop()
            raise RuntimeError("API did not start:\n" + self.log_path.read_text()[-4000:]) from None
        return self

    @property
    def verify(self):
        """What httpx should verify this server with: its own CA when on TLS."""
        import ssl

        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.returncode = self.proc.returncode
        self.proc = None

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@pytest.fixture(scope="session")
def agent_pyz(tmp_path_factory):
    """The agent zipapp as hosts receive it, built once per session."""
    from agent_support import build_pyz

    return build_pyz(tmp_path_factory)


@pytest.fixture
def s3(tmp_path):
    """moto's S3 on loopback, for one test."""
    from offsite_support import MotoS3

    server = MotoS3(tmp_path / "moto").start()
    yield server
    server.stop()


@pytest.fixture
def api_server_pg(migrated_pg_url, tmp_path):
    server = ApiServer(migrated_pg_url, tmp_path / "api").start()
    yield server
    server.stop()


@pytest.fixture
def api_server_sqlite(migrated_sqlite_url, tmp_path):
    server = ApiServer(migrated_sqlite_url, tmp_path / "api").start()
    yield server
    server.stop()


def lab_net() -> str:
    """The loopback /24 prefix the lab tests use, e.g. '127.0.0'."""
    return os.environ.get("SAVEOS_TEST_LAB_NET", "127.0.0")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (namespaces, mounts)")
