"""Helpers for the API tests: an in-process app on a real database (reports: report_support)."""

from __future__ import annotations

import secrets
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from saveos_api.main import create_app
from saveos_api.settings import Settings

# The operations the schema-driven runs call with an agent's token (the rest with an admin's).
AGENT_PATHS = {
    "/api/v1/agents/me",
    "/api/v1/agents/heartbeat",
    "/api/v1/reports/snapshots",
    "/api/v1/reports/checks",
    "/api/v1/reports/drills",
    "/api/v1/jobs/{job_id}/result",
}


class Api:
    """A TestClient around create_app() with the admin token at hand."""

    def __init__(self, database_url: str, data_dir: Path, **overrides):
        self.admin_token = "adm_" + secrets.token_urlsafe(32)
        self.settings = Settings(
            data_dir=data_dir, database_url=database_url, admin_token=self.admin_token, **overrides
        )
        self.app = create_app(self.settings)
        # Entered so the lifespan runs (it starts the heartbeat writer).
        self.client = TestClient(self.app).__enter__()
        self.admin = {"Authorization": f"Bearer {self.admin_token}"}

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.app.state.db.dispose()

    def provision(self, name: str, **body) -> dict:
        r = self.client.post(
            "/api/v1/agents/provision", json={"name": name, **body}, headers=self.admin
        )
        assert r.status_code in (200, 201), r.text
        return r.json()

    def agent(self, name: str, **body) -> tuple[int, dict[str, str]]:
        """Provision a new agent; returns its id and the headers carrying its token."""
        out = self.provision(name, **body)
        assert out["token"], out
        return out["id"], {"Authorization": f"Bearer {out['token']}"}

    def count(self, table: str) -> int:
        import sqlalchemy as sa

        with self.app.state.db.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
