"""Group commit for heartbeats: every request waiting at a moment is written in one transaction.

Writer lanes (one on SQLite, PG_LANES on PostgreSQL) each drain a queue of their own; a beat
goes to the lane its token hashes to, so one agent's rows are only ever written by one lane
and concurrent batches never wait for (or deadlock on) each other's row locks. A lane
authenticates the whole batch with one SELECT, updates agents, inserts the heartbeat rows in
one multi-row INSERT, hands out queued jobs with one conditional UPDATE ... RETURNING,
commits, and only then answers each request (on PostgreSQL all of it is one statement).
Under load, batches grow and the per-heartbeat cost shrinks; idle, a batch is one heartbeat.
Each lane keeps one connection of its own and uses it from one thread of its own, so a
batch costs no pool checkout, no liveness ping and no thread-pool handoff.

`HeartbeatFastPath` answers the ordinary heartbeat (a bearer token, a valid JSON body) as a
plain ASGI handler in front of FastAPI's routing, dependency injection and response-model
machinery, which cost more CPU than the whole batched write. Anything else (no or malformed
token, invalid body, another content type) goes on to the FastAPI route, which answers it
exactly as before; the route also documents the endpoint in the OpenAPI schema.
"""

from saveos_api.heartbeats.fastpath import HEARTBEAT_PATH, HeartbeatFastPath
from saveos_api.heartbeats.writer import HeartbeatWriter

__all__ = ["HEARTBEAT_PATH", "HeartbeatFastPath", "HeartbeatWriter"]
