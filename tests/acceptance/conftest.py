"""Fixtures for the fleet acceptance suite (issue 7), plus the figure lines each case prints.

Every case appends one line to `figures`; they are printed after the run (even under pytest's
output capture) so CI logs show e.g. `R1 restore round trip: 3/3 hosts identical, 1,204 files`.
The API always runs as a real uvicorn process (`saveos server`) on a fresh PostgreSQL database.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_ADMIN_URL, ApiServer, _pg_exec

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
                    "SELECT id, name, last_seen, heartbeat_count, agent_version, hostname, "
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

    def __init__(self, data_dir: Path):
        self.db_name = f"saveos_accept_{uuid.uuid4().hex[:12]}"
        _pg_exec(f'CREATE DATABASE "{self.db_name}"')
        self.db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.server = ApiServer(self.db_url, data_dir)
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
        _pg_exec(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api_pg(tmp_path_factory) -> ApiOnPg:
    """A running API on a PostgreSQL database of its own, for one test module."""
    api = ApiOnPg(tmp_path_factory.mktemp("accept-api"))
    try:
        api.server.start()
        yield api
    finally:
        api.close()
