"""The ordinary heartbeat on the fast path (saveos_api/fastpath.py), straight to the writer."""

from __future__ import annotations

from saveos_api.deps import API_PREFIX
from saveos_api.fastpath import FastRoute
from saveos_api.schemas import HeartbeatIn

HEARTBEAT_PATH = f"{API_PREFIX}/agents/heartbeat"


async def _answer(state, token: str, body: HeartbeatIn):
    result = await state.heartbeats.submit(token, body)
    return 200, {
        "agent_id": result["agent_id"],
        "server_time": result["server_time"].isoformat().replace("+00:00", "Z"),
        "jobs": result["jobs"],
    }


HEARTBEAT_ROUTE = FastRoute(HEARTBEAT_PATH, HeartbeatIn, _answer)
