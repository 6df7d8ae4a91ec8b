"""Group commit for heartbeats: every request waiting at a moment is written in one transaction.

Writer lanes (saveos_api/lanes.py: one on SQLite, PG_LANES on PostgreSQL) each drain a
queue; a beat goes to the lane its token hashes to, so one agent's rows are only ever written
by one lane and concurrent batches never wait for (or deadlock on) each other's row locks. A lane
authenticates the whole batch with one SELECT, updates agents, inserts the heartbeat rows in
one multi-row INSERT, hands out queued jobs with one conditional UPDATE ... RETURNING,
commits, and only then answers each request (on PostgreSQL all of it is one statement).
Under load, batches grow and the per-heartbeat cost shrinks; idle, a batch is one heartbeat.
Each lane keeps one connection of its own and uses it from one thread of its own, so a
batch costs no pool checkout, no liveness ping and no thread-pool handoff.

HEARTBEAT_ROUTE answers the ordinary heartbeat (a bearer token, a valid JSON body) on the fast
path (saveos_api/fastpath.py) in front of FastAPI's routing; anything else goes on to the
FastAPI route, which answers it exactly as before with the same writer.
"""

from saveos_api.heartbeats.fastpath import HEARTBEAT_PATH, HEARTBEAT_ROUTE
from saveos_api.heartbeats.writer import HeartbeatWriter

__all__ = ["HEARTBEAT_PATH", "HEARTBEAT_ROUTE", "HeartbeatWriter"]
