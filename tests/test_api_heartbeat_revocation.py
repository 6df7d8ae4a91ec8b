"""Heartbeat authentication: a revoked or decommissioned agent's token stops working at once."""

from __future__ import annotations


def test_revocation_takes_effect_at_once(api):
    agent_id, headers = api.agent("lab1")
    beat = api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers)
    assert beat.status_code == 200  # accepted before
    revoked = api.client.post(f"/api/v1/agents/{agent_id}/tokens/revoke", headers=api.admin)
    assert revoked.json() == {"revoked": 1}
    again = api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers)
    assert again.status_code == 401
    # Decommissioning revokes too.
    token = api.provision("lab1", rotate=True)["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers).status_code == 200
    assert api.client.delete(f"/api/v1/agents/{agent_id}", headers=api.admin).status_code == 200
    assert api.client.post("/api/v1/agents/heartbeat", json={}, headers=headers).status_code == 401
