"""Live job progress: the agent's JobProgress thread against a real API server (uvicorn), and
what the API keeps of it (only while the job runs; the final result replaces it)."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest
from saveos_agent.config import Config
from saveos_agent.progress import JobProgress


@pytest.fixture
def running_job(api_server_sqlite, tmp_path):
    api = api_server_sqlite
    with httpx.Client(base_url=api.url, headers=api.admin_headers(), timeout=10) as http:
        made = {}
        for name in ("p1", "p2"):
            made[name] = http.post("/api/v1/agents/provision", json={"name": name}).json()
        (job,) = http.post("/api/v1/jobs", json={"kind": "backup", "agents": ["p1"]}).json()["jobs"]
        beat = http.post(
            "/api/v1/agents/heartbeat",
            json={},
            headers={"Authorization": f"Bearer {made['p1']['token']}"},
        ).json()
        assert [j["id"] for j in beat["jobs"]] == [job["id"]]  # now running
    token_file = tmp_path / "token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, made["p1"]["token"].encode())
    os.close(fd)
    cfg = Config(path="x", repository="/nowhere", sources=["/srv"], api_url=api.url)
    cfg.token_file = str(token_file)
    return api, cfg, job["id"], made


def _job(api, job_id):
    return httpx.get(f"{api.url}/api/v1/jobs/{job_id}", headers=api.admin_headers()).json()


def test_progress_is_posted_while_the_job_runs_and_replaced_by_the_result(running_job):
    api, cfg, job_id, made = running_job
    with JobProgress(cfg, job_id, every_s=0.1) as progress:
        assert progress.enabled
        progress.update(
            {"type": "archive_progress", "nfiles": 12, "original_size": 3000, "path": "srv/a"}
        )
        deadline = time.monotonic() + 10
        while progress.sent == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert progress.sent >= 1
    shown = _job(api, job_id)["result"]["progress"]
    assert shown["nfiles"] == 12 and shown["original_size"] == 3000 and shown["path"] == "srv/a"
    agent = {"Authorization": f"Bearer {made['p1']['token']}"}
    other = {"Authorization": f"Bearer {made['p2']['token']}"}
    body = {"nfiles": 1, "original_size": 1}
    with httpx.Client(base_url=api.url, timeout=10) as http:
        assert (
            http.post(f"/api/v1/jobs/{job_id}/progress", json=body, headers=other).status_code
            == 403
        )
        assert (
            http.post("/api/v1/jobs/999999/progress", json=body, headers=agent).status_code == 404
        )
        bad = http.post(f"/api/v1/jobs/{job_id}/progress", json={"nfiles": -1}, headers=agent)
        assert bad.status_code == 422
        done = http.post(
            f"/api/v1/jobs/{job_id}/result",
            json={"report_id": "x" * 12, "state": "succeeded", "result": {"archive": "a"}},
            headers=agent,
        )
        assert done.status_code == 201
        late = http.post(f"/api/v1/jobs/{job_id}/progress", json=body, headers=agent)
        assert late.status_code == 200 and late.json() == {"updated": False}
    assert _job(api, job_id)["result"] == {"archive": "a"}


def test_no_api_means_no_thread_and_nothing_sent(tmp_path):
    cfg = Config(path="x", repository="/nowhere", sources=["/srv"])
    with JobProgress(cfg, 5) as progress:
        progress.update({"nfiles": 1})
    assert not progress.enabled and progress.sent == 0
    assert json.dumps(progress.latest)  # kept, harmlessly
