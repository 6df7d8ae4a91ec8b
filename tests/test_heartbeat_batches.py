"""Heartbeat batches: one batch is answered and written alike by the SQLite and the PostgreSQL
writer; under contention on PostgreSQL (a real server, a handful of agents, each with several
beats in flight at once, jobs queued meanwhile) no batch waits for another's row locks."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import defaultdict
from datetime import datetime

import httpx
import pytest
import sqlalchemy as sa
from api_support import Api
from conftest import ApiServer
from fastapi import HTTPException

from saveos_api.schemas import HeartbeatIn

# One batch: the same agent several times, declarations that change back, refused tokens.
BATCH = [
    ("busy", {"agent_version": "3", "facts": {"n": 1}}),
    ("quiet", {}),
    ("busy", {"agent_version": "2", "hostname": "busy.example"}),
    ("revoked", {}),
    ("gone", {}),
    ("admin", {}),
    ("unknown", {}),
    ("busy", {"facts": {"n": 3}}),
    ("malformed", {}),
    ("busy", {}),
]


async def _submit_together(writer, beats):
    # Queued before any lane wakes up: each lane writes its share as one batch.
    return await asyncio.gather(
        *(writer.submit(token, HeartbeatIn(**body)) for token, body in beats),
        return_exceptions=True,
    )


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def test_a_batch_is_answered_and_written_alike_on_both_databases(request, tmp_path, database):
    url = request.getfixturevalue(
        "migrated_sqlite_url" if database == "sqlite" else "migrated_pg_url"
    )
    api = Api(url, tmp_path / "data", heartbeat_history=5)
    c, beat_url = api.client, "/api/v1/agents/heartbeat"
    try:
        ids = {}
        tokens = {"admin": api.admin_token, "unknown": "sos_" + "x" * 43, "malformed": "nope"}
        for name in ("busy", "quiet", "revoked", "gone"):
            out = api.provision(name)
            ids[name], tokens[name] = out["id"], out["token"]
        for _ in range(30):  # the next 4 beats cross a trimming boundary (every 32)
            body = {"agent_version": "2", "os": "linux"}
            c.post(beat_url, json=body, headers={"Authorization": f"Bearer {tokens['busy']}"})
        c.post(f"/api/v1/agents/{ids['revoked']}/tokens/revoke", headers=api.admin)
        c.delete(f"/api/v1/agents/{ids['gone']}", headers=api.admin)
        jobs = {}
        for name, kind, params in (
            ("stale", "check", {"verify_data": False}),
            ("busy", "backup", {}),
            ("busy2", "check", {"verify_data": True}),
        ):
            body = {"kind": kind, "agents": ["busy"], "params": params}
            jobs[name] = c.post("/api/v1/jobs", json=body, headers=api.admin).json()["jobs"][0]
        jobs["quiet"] = c.post(
            "/api/v1/jobs", json={"kind": "check", "agents": ["quiet"]}, headers=api.admin
        ).json()["jobs"][0]
        with api.app.state.db.engine.begin() as conn:  # timed out, not yet expired
            conn.execute(
                sa.text("UPDATE jobs SET created_at = :t WHERE id = :id"),
                {"t": datetime(2000, 1, 1), "id": jobs["stale"]["id"]},
            )

        beats = [(tokens[name], body) for name, body in BATCH]
        answers = c.portal.call(_submit_together, api.app.state.heartbeats, beats)

        def job(name):
            return {
                "id": jobs[name]["id"],
                "kind": jobs[name]["kind"],
                "params": jobs[name]["params"],
            }

        got = [
            (a.status_code, a.detail)
            if isinstance(a, HTTPException)
            else (a["agent_id"], a["jobs"])
            for a in answers
        ]
        refused = (401, "invalid or revoked agent token")
        assert got == [
            (ids["busy"], [job("busy"), job("busy2")]),  # to the agent's first beat, in order
            (ids["quiet"], [job("quiet")]),
            (ids["busy"], []),
            refused,
            refused,
            (403, "this endpoint takes an agent token, not an operator's token"),
            refused,
            (ids["busy"], []),
            refused,
            (ids["busy"], []),
        ]
        with api.app.state.db.engine.connect() as conn:
            agents = {
                row.name: row
                for row in conn.execute(
                    sa.text("SELECT * FROM agents WHERE name IN ('busy', 'quiet')")
                )
            }
            rows = dict(
                conn.execute(
                    sa.text("SELECT agent_id, count(*) FROM heartbeats GROUP BY agent_id")
                ).all()
            )
            states = dict(conn.execute(sa.text("SELECT id, state FROM jobs")).all())
        busy = agents["busy"]
        facts = json.loads(busy.facts) if isinstance(busy.facts, str) else busy.facts
        # The latest declaration wins, even when it changes a field back.
        assert (busy.agent_version, busy.hostname, busy.os, facts) == (
            "2",
            "busy.example",
            "linux",
            {"n": 3},
        )
        assert (busy.heartbeat_count, agents["quiet"].heartbeat_count) == (34, 1)
        # Trimmed to the bound, counting the batch's own beats.
        assert rows == {ids["busy"]: 5, ids["quiet"]: 1}
        assert {name: states[j["id"]] for name, j in jobs.items()} == {
            "stale": "queued",  # never handed out, whether or not expired yet
            "busy": "running",
            "busy2": "running",
            "quiet": "running",
        }
        # The FastAPI route (a content type the fast path leaves to it) answers the same way.
        other = {"Authorization": f"Bearer {tokens['quiet']}", "content-type": "application/x+json"}
        routed = c.post(beat_url, content=b"{}", headers=other).json()
        fast = c.post(
            beat_url, json={}, headers={"Authorization": f"Bearer {tokens['quiet']}"}
        ).json()
        assert routed.keys() == fast.keys() == {"agent_id", "server_time", "jobs"}
        assert routed["agent_id"] == fast["agent_id"] and routed["server_time"][-1] == "Z"
    finally:
        api.close()


AGENTS = 4
CLIENTS = 64
BEATS = 4000
JOB_ROUNDS = 40


async def _storm(server: ApiServer):
    admin = server.admin_headers()
    limits = httpx.Limits(max_connections=CLIENTS + 8)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        names = [f"busy{i}" for i in range(AGENTS)]
        tokens = {}
        for name in names:
            out = await http.post("/api/v1/agents/provision", json={"name": name}, headers=admin)
            tokens[out.json()["id"]] = {"Authorization": f"Bearer {out.json()['token']}"}
        created: list[int] = []
        answers: list[tuple[int, int, httpx.Response]] = []  # (agent, beat number, answer)
        numbers = itertools.count()

        async def queue_jobs():
            for _ in range(JOB_ROUNDS):
                body = {"kind": "check", "agents": names}
                r = await http.post("/api/v1/jobs", json=body, headers=admin)
                assert r.status_code == 201, r.text
                created.extend(j["id"] for j in r.json()["jobs"])
                await asyncio.sleep(0.01)

        async def beat(agent_id: int):
            n = next(numbers)
            body = {"agent_version": f"1.{n}", "facts": {"beat": n}}
            r = await http.post("/api/v1/agents/heartbeat", json=body, headers=tokens[agent_id])
            answers.append((agent_id, n, r))

        async def client(i: int):
            # Consecutive clients beat for different agents: every agent has many beats
            # in flight at any moment.
            while len(answers) < BEATS:
                await beat(list(tokens)[i % AGENTS])

        await asyncio.gather(queue_jobs(), *(client(i) for i in range(CLIENTS)))
        for agent_id in tokens:  # picks up the jobs queued last
            await beat(agent_id)
    return tokens, created, answers


def _watch_lock_waits(pg_url: str, storming: threading.Event, waits: list) -> None:
    """Samples the row locks the server's sessions wait for: a batch waits only for a row
    another transaction (another lane's batch) has changed and not yet committed."""
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            while storming.is_set():
                waits += conn.execute(sa.text(WAITING)).all()
                time.sleep(0.001)
    finally:
        engine.dispose()


WAITING = """
SELECT l.locktype, left(a.query, 40) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE NOT l.granted AND a.datname = current_database() AND l.locktype IN ('transactionid', 'tuple')
"""


@pytest.mark.pg
def test_concurrent_beats_of_one_agent_never_contend_or_deadlock(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SAVEOS_HEARTBEAT_HISTORY", "100000")  # every row stays to be checked
    server = ApiServer(pg_url, tmp_path / "api").start()
    waits = []
    storming = threading.Event()
    storming.set()
    watcher = threading.Thread(target=_watch_lock_waits, args=(pg_url, storming, waits))
    watcher.start()
    try:
        tokens, created, answers = asyncio.run(_storm(server))
    finally:
        storming.clear()
        watcher.join()
        server.stop()

    refused = [(r.status_code, r.text) for _, _, r in answers if r.status_code != 200]
    assert not refused, refused[:5]
    acked = defaultdict(set)
    last_ack = {}
    delivered = []
    for agent_id, n, r in answers:
        out = r.json()
        assert out["agent_id"] == agent_id
        acked[agent_id].add(n)
        seen = datetime.fromisoformat(out["server_time"])
        last_ack[agent_id] = max(last_ack.get(agent_id, seen), seen)
        delivered += [j["id"] for j in out["jobs"]]
    assert len(created) == AGENTS * JOB_ROUNDS
    assert sorted(delivered) == sorted(created)  # each job handed out exactly once

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            for agent_id, count, last_heartbeat_at in conn.execute(
                sa.text("SELECT id, heartbeat_count, last_heartbeat_at FROM agents")
            ):
                assert count == len(acked[agent_id])
                assert last_heartbeat_at == last_ack[agent_id]
            stored = defaultdict(set)
            for agent_id, n in conn.execute(
                sa.text("SELECT agent_id, (facts->>'beat')::int FROM heartbeats")
            ):
                stored[agent_id].add(n)
            assert stored == acked
            states = conn.execute(sa.text("SELECT DISTINCT state FROM jobs")).scalars().all()
            assert states == ["running"]
            # The server's sessions are closed, so their statistics are flushed.
            deadlocks = conn.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
    finally:
        engine.dispose()
    log = server.log_path.read_text()
    assert waits == [], waits[:5]  # one agent's beats are written by one lane only
    assert deadlocks == 0 and "deadlock" not in log and "heartbeat batch" not in log, log[-3000:]
