"""Group-committed heartbeats: concurrent beats share transactions, yet each is counted, each
queued job is handed out exactly once, and a revocation beats the token cache."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa
from api_support import Api


@pytest.fixture
def api(db_url, tmp_path):
    api = Api(db_url, tmp_path / "data")
    yield api
    api.close()


def test_concurrent_heartbeats_are_batched_counted_and_get_each_job_once(api):
    agents = [api.agent(f"lab{i}") for i in range(6)]
    jobs = api.client.post(
        "/api/v1/jobs",
        json={"kind": "backup", "agents": [agent_id for agent_id, _ in agents]},
        headers=api.admin,
    ).json()["jobs"]
    beats_per_agent = 10

    async def beat_all():
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/agents/heartbeat",
                        json={"agent_version": f"1.{n}", "facts": {"n": n}},
                        headers=headers,
                    )
                    for n in range(beats_per_agent)
                    for _, headers in agents
                )
            )

    responses = asyncio.run(beat_all())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    handed = [job["id"] for r in responses for job in r.json()["jobs"]]
    assert sorted(handed) == sorted(job["id"] for job in jobs)  # each exactly once
    for r in responses:
        for job in r.json()["jobs"]:
            assert job == {"id": job["id"], "kind": "backup", "params": {}}
            assert [j["agent_id"] for j in jobs if j["id"] == job["id"]] == [r.json()["agent_id"]]
    writer = api.app.state.heartbeats
    assert writer.beats == len(responses) and writer.batches < writer.beats  # really grouped
    assert api.count("heartbeats") == len(responses)
    with api.app.state.db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT heartbeat_count, agent_version FROM agents")).all()
    assert [count for count, _ in rows] == [beats_per_agent] * len(agents)
    assert all(version.startswith("1.") for _, version in rows)
    for job in jobs:
        state = api.client.get(f"/api/v1/jobs/{job['id']}", headers=api.admin).json()["state"]
        assert state == "running"


def test_revocation_takes_effect_at_once_despite_the_token_cache(api):
    agent_id, headers = api.agent("lab1")
    beat = api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers)
    assert beat.status_code == 200  # the token is now in the cache
    revoked = api.client.post(f"/api/v1/agents/{agent_id}/tokens/revoke", headers=api.admin)
    assert revoked.json() == {"revoked": 1}
    again = api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers)
    assert again.status_code == 401
    # Decommissioning revokes too, for a fresh token that was cached.
    token = api.provision("lab1", rotate=True)["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers).status_code == 200
    assert api.client.delete(f"/api/v1/agents/{agent_id}", headers=api.admin).status_code == 200
    assert api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers).status_code == 401
