"""One definition of "a live agent token" (auth.live_agent_token): not revoked, its agent not
decommissioned, and never the admin token. Each way an agent's token is checked must refuse
the same three, on SQLite and on PostgreSQL:

- auth.require_agent (every agent endpoint but the heartbeat),
- the heartbeat fast path (saveos_api/heartbeats/fastpath.py, then the writer's batch),
- the heartbeat route behind it (a body the fast path passes on), same writer.
The writer's batch is heartbeats/portable.py on SQLite and heartbeats/postgres.py on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from report_support import snapshot_report

BEAT = "/api/v1/agents/heartbeat"


def _me(api, headers):
    return api.client.get("/api/v1/agents/me", headers=headers)


def _report(api, headers):
    return api.client.post("/api/v1/reports/snapshots", json=snapshot_report(), headers=headers)


def _beat_fast(api, headers):
    return api.client.post(BEAT, json={"os": "linux"}, headers=headers)


def _beat_route(api, headers):
    # A JSON media type other than plain application/json: the fast path passes it on to the
    # FastAPI route, which authenticates through the same writer.
    return api.client.post(
        BEAT,
        content=b'{"os": "linux"}',
        headers={**headers, "Content-Type": "application/vnd.saveos+json"},
    )


PATHS = {
    "require_agent: GET /agents/me": _me,
    "require_agent: POST /reports/snapshots": _report,
    "heartbeat fast path": _beat_fast,
    "heartbeat route": _beat_route,
}


def _revoke(api, agent_id, token):
    api.client.post(f"/api/v1/agents/{agent_id}/tokens/revoke", headers=api.admin)
    return token


def _decommission_only(api, agent_id, token):
    # Only the agent row: the token itself stays unrevoked, so the agent clause alone refuses.
    with api.app.state.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE agents SET decommissioned_at = :now WHERE id = :id"),
            {"now": datetime.now(UTC), "id": agent_id},
        )
    return token


def _admin(api, _agent_id, _token):
    return api.admin_token


CASES = {
    "revoked": (_revoke, 401),
    "decommissioned": (_decommission_only, 401),
    "admin token": (_admin, 403),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("path", list(PATHS))
def test_every_agent_path_refuses_what_is_not_a_live_agent_token(api, path, case):
    call = PATHS[path]
    agent_id, headers = api.agent("lab1")
    assert call(api, headers).status_code in (200, 201), "accepted while live"
    spoil, expected = CASES[case]
    token = spoil(api, agent_id, headers["Authorization"].removeprefix("Bearer "))
    answer = call(api, {"Authorization": f"Bearer {token}"})
    assert answer.status_code == expected, answer.text
    if expected == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {"detail": "invalid or revoked agent token"}
    else:
        assert "not an operator's token" in answer.json()["detail"]
