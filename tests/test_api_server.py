"""The API as operators run it (`saveos server` under uvicorn) and its configuration checks."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cli_support import saveos
from conftest import ApiServer
from prometheus_client.parser import text_string_to_metric_families
from report_support import iso, snapshot_report

from saveos_api.settings import ConfigError, Settings


@pytest.mark.pg
def test_real_server_on_postgresql(api_server_pg: ApiServer):
    base, admin = api_server_pg.url, api_server_pg.admin_headers()
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/health").json() == {"status": "ok", "database": "ok"}
        prov = http.post("/api/v1/agents/provision", json={"name": "lab1"}, headers=admin)
        assert prov.status_code == 201
        token = prov.json()["token"]
        agent = {"Authorization": f"Bearer {token}"}
        job = http.post("/api/v1/jobs", json={"kind": "backup", "agents": ["lab1"]}, headers=admin)
        job_id = job.json()["jobs"][0]["id"]
        beat = http.post("/api/v1/agents/heartbeat", json={"agent_version": "0.1"}, headers=agent)
        assert beat.status_code == 200 and [j["id"] for j in beat.json()["jobs"]] == [job_id]
        done = datetime.now(UTC) - timedelta(seconds=1)
        body = snapshot_report(done, job_id=job_id)
        assert http.post("/api/v1/reports/snapshots", json=body, headers=agent).status_code == 201
        assert http.post("/api/v1/reports/snapshots", json=body, headers=agent).status_code == 200
        result = {"report_id": body["report_id"], "state": "succeeded", "result": {}}
        assert http.post(f"/api/v1/jobs/{job_id}/result", json=result, headers=agent).is_success
        fleet = http.get(
            "/api/v1/fleet/status", params={"at": iso(datetime.now(UTC))}, headers=admin
        ).json()
        assert fleet["agents"][0]["status"] == "ok"
        assert fleet["agents"][0]["last_archive"] == body["archive"]
        assert http.get(f"/api/v1/jobs/{job_id}", headers=admin).json()["state"] == "succeeded"
        metrics = {
            f.name: f
            for f in text_string_to_metric_families(http.get("/metrics", headers=admin).text)
        }
        assert metrics["saveos_agents"].samples
        assert (
            http.post(
                "/api/v1/agents/heartbeat", content=b"x" * (2 << 20), headers=agent
            ).status_code
            == 413
        )
    log = api_server_pg.log_path.read_text()
    assert token not in log and api_server_pg.admin_token not in log


def _server(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return saveos("server", *args, env={**os.environ, **env}, timeout=timeout)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no admin token"),
        ({"SAVEOS_ADMIN_TOKEN": "x" * 30, "SAVEOS_DATABASE_URL": "nope://"}, "SAVEOS_DATABASE_URL"),
    ],
    ids=["missing-token", "bad-db-url"],
)
def test_server_refuses_bad_configuration_in_one_line(tmp_path, monkeypatch, env, message):
    monkeypatch.delenv("SAVEOS_ADMIN_TOKEN", raising=False)
    proc = _server({"SAVEOS_DATA_DIR": str(tmp_path / "data"), **env}, "--port", "1")
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no admin token"),
        ({"admin_token": "changeme"}, "placeholder"),
        ({"admin_token": "please-CHANGE_ME-now-0123456789"}, "placeholder"),
        ({"admin_token": "short-token-123"}, "shorter than 24"),
        ({"admin_token": "   "}, "empty"),
        ({"admin_token": "x" * 30, "secret_key": "tiny"}, "secret key"),
    ],
)
def test_settings_refuse_weak_secrets(tmp_path, monkeypatch, kwargs, message):
    for var in ("SAVEOS_ADMIN_TOKEN", "SAVEOS_SECRET_KEY", "SAVEOS_ADMIN_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=message):
        Settings(data_dir=tmp_path, **kwargs).validate_secrets()


def test_world_readable_token_file_is_refused_and_secret_is_generated_private(tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text("adm_" + "k" * 40 + "\n")
    token_file.chmod(0o644)
    settings = Settings(data_dir=tmp_path, admin_token_file=token_file)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        settings.validate_secrets()
    assert "k" * 40 not in str(err.value)
    token_file.chmod(0o600)
    settings = Settings(data_dir=tmp_path, admin_token_file=token_file)
    settings.validate_secrets()
    assert settings.admin_token_value == "adm_" + "k" * 40
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    # The secret is stable across restarts (tokens issued before must stay valid).
    assert Settings(data_dir=tmp_path, admin_token_file=token_file).secret_key_bytes == (
        settings.secret_key_bytes
    )


def test_init_creates_private_files_and_hides_the_token(tmp_path, monkeypatch):
    monkeypatch.delenv("SAVEOS_ADMIN_TOKEN", raising=False)
    data = tmp_path / "data"
    env = {"SAVEOS_DATA_DIR": str(data)}
    proc = _server(env, "init")
    assert proc.returncode == 0, proc.stderr
    token = (data / "admin.token").read_text().strip()
    assert len(token) >= 40 and token not in proc.stdout
    assert str(data / "admin.token") in proc.stdout
    for name in ("admin.token", "secret.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    again = _server(env, "init", "--show")
    assert again.returncode == 0 and token in again.stdout
    assert (data / "admin.token").read_text().strip() == token  # never overwritten

    migrated = _server(env, "migrate")
    assert migrated.returncode == 0 and "head" in migrated.stdout
    assert (data / "saveos.db").exists()
