"""R8 load: 1,000 simulated agents heartbeat and report snapshots over real HTTP for a while;
then a fleet of 10,000 agents on the P3 generator's open-loop schedule (benchmarks/fleetgen.py).

The API is the real uvicorn server on PostgreSQL; the agents are coroutines sharing one async
httpx client (each with its own token). Every request must succeed, and every acknowledged report
must be in the database exactly once (acknowledged count == rows), likewise every heartbeat
(agents.heartbeat_count). SAVEOS_R8_AGENTS / SAVEOS_R8_SECONDS / SAVEOS_R8_THINK_S size the run.

The fleet case: 10,000 agents heartbeating every 10 s and 100 snapshot reports a second over
them, for 60 s, against 2 API workers (SAVEOS_R8_FLEET_AGENTS / SAVEOS_R8_FLEET_SECONDS). Its
line prints the figures; its speed goal (p99 < 200 ms) is measured by benchmarks/r8_fleet.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from conftest import REPO_ROOT
from report_support import snapshot_report

from acceptance.conftest import ApiOnPg

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import fleetgen  # noqa: E402

pytestmark = pytest.mark.pg

AGENTS = int(os.environ.get("SAVEOS_R8_AGENTS", "1000"))
SECONDS = float(os.environ.get("SAVEOS_R8_SECONDS", "60"))
# Pause between an agent's rounds (heartbeat + report); real agents beat once a minute.
THINK_S = float(os.environ.get("SAVEOS_R8_THINK_S", "2.0"))
CONNECTIONS = 64
FLEET_AGENTS = int(os.environ.get("SAVEOS_R8_FLEET_AGENTS", "10000"))
FLEET_SECONDS = float(os.environ.get("SAVEOS_R8_FLEET_SECONDS", "60"))


class Stats:
    def __init__(self):
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.acked_reports: Counter[int] = Counter()
        self.acked_beats: Counter[int] = Counter()
        self.in_flight = asyncio.Semaphore(CONNECTIONS)


async def _provision(client: httpx.AsyncClient, admin: dict, count: int) -> list[tuple[int, str]]:
    """(id, token) of `count` new agents, 1,000 to a call of the bulk endpoint (what the role
    uses; one call a host took 5 s of the case for 1,000)."""
    agents: list[tuple[int, str]] = []
    for first in range(0, count, 1000):
        names = [{"name": f"load-{i:04d}"} for i in range(first, min(count, first + 1000))]
        r = await client.post(
            "/api/v1/agents/provision-batch", json={"agents": names}, headers=admin
        )
        r.raise_for_status()
        agents += [(a["id"], a["token"]) for a in r.json()["agents"]]
    return agents


async def _timed(stats: Stats, kind: str, client: httpx.AsyncClient, path: str, **kwargs):
    # At most CONNECTIONS requests in flight: httpx's pool gets slow with a thousand waiters, and
    # the latency measured is then the server's, not the client's queue.
    async with stats.in_flight:
        started = time.perf_counter()
        try:
            r = await client.post(path, **kwargs)
        except httpx.HTTPError as exc:
            stats.errors[f"{kind}: {type(exc).__name__}"] += 1
            return None
        stats.latencies.append(time.perf_counter() - started)
    if r.status_code not in (200, 201):
        stats.errors[f"{kind}: HTTP {r.status_code}"] += 1
        return None
    return r


async def _agent(client, agent_id: int, token: str, deadline: float, stats: Stats) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    await asyncio.sleep(random.uniform(0, THINK_S))  # spread the start
    while time.monotonic() < deadline:
        beat = {"agent_version": "load", "borg_version": "1.2.4", "os": "Debian 12"}
        if await _timed(
            stats, "heartbeat", client, "/api/v1/agents/heartbeat", json=beat, headers=headers
        ):
            stats.acked_beats[agent_id] += 1
        body = snapshot_report(datetime.now(UTC), archive=f"load-{agent_id}-{time.time_ns()}")
        r = await _timed(
            stats, "report", client, "/api/v1/reports/snapshots", json=body, headers=headers
        )
        if r is not None and r.json()["duplicate"] is False:
            stats.acked_reports[agent_id] += 1
        # no pause past the deadline: the loop would only end after it
        pause = random.uniform(0.5, 1.5) * THINK_S
        await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))


async def _run(url: str, admin: dict) -> tuple[Stats, float]:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    timeout = httpx.Timeout(60.0, pool=120.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        agents = await _provision(client, admin, AGENTS)
        stats = Stats()
        started = time.monotonic()
        deadline = started + SECONDS
        await asyncio.gather(*(_agent(client, i, t, deadline, stats) for i, t in agents))
        return stats, time.monotonic() - started


def test_r8_thousand_agents_lose_nothing(api_pg, figures):
    stats, elapsed = asyncio.run(_run(api_pg.url, api_pg.admin))
    requests = len(stats.latencies) + sum(stats.errors.values())
    assert not stats.errors, dict(stats.errors)
    with api_pg.rows.engine.connect() as conn:
        import sqlalchemy as sa

        stored = dict(
            conn.execute(
                sa.text("SELECT agent_id, count(*) FROM snapshots GROUP BY agent_id")
            ).all()
        )
        beats = dict(
            conn.execute(
                sa.text("SELECT id, heartbeat_count FROM agents WHERE heartbeat_count > 0")
            ).all()
        )
    lost = {a: (n, stored.get(a, 0)) for a, n in stats.acked_reports.items() if stored.get(a) != n}
    extra = set(stored) - set(stats.acked_reports)
    assert not lost and not extra, (lost, extra)
    assert beats == dict(stats.acked_beats)
    assert len(stats.acked_reports) == AGENTS  # every agent got its reports through
    latencies = sorted(stats.latencies)
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    reports = sum(stats.acked_reports.values())
    figures.append(
        f"R8 load: {AGENTS:,} agents for {SECONDS:.0f} s ({elapsed:.0f} s with the last requests), "
        f"{requests:,} requests "
        f"({requests / elapsed:,.0f} req/s), p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, 0 errors, "
        f"{reports:,}/{reports:,} reports and {sum(beats.values()):,} heartbeats in the database"
    )


def test_r8_a_fleet_of_ten_thousand_agents_loses_nothing(tmp_path, figures):
    args = argparse.Namespace(
        duration=FLEET_SECONDS, warmup=5, beat_every=10, reports_per_s=100, connections=128, procs=1
    )
    api = ApiOnPg(tmp_path / "api", workers=2)
    try:
        api.server.start()
        tokens = tmp_path / "tokens"
        fleetgen.provision(api.url, api.admin, FLEET_AGENTS, tokens)
        run = subprocess.run(
            fleetgen.command(api.url, tokens, args), stdout=subprocess.PIPE, text=True, check=True
        )
        out = json.loads(run.stdout.strip().splitlines()[-1])
        api.server.stop()  # every answer is in; nothing more can be written
        in_db = fleetgen.stored(api.db_url)
    finally:
        api.close()
    beats, reports = out["heartbeat"], out["report"]
    assert out["errors"] == 0 and out["unanswered"] == 0, out
    # The schedule was offered in full: every agent's beats, the fleet's reports.
    scheduled_beats = FLEET_AGENTS * (args.warmup + args.duration) / args.beat_every
    assert beats["sent"] >= 0.95 * scheduled_beats, out
    assert reports["sent"] >= 0.95 * args.reports_per_s * (args.warmup + args.duration), out
    assert beats["acked"] == beats["sent"] and reports["created"] == reports["sent"], out
    # Stored = acknowledged, counted in the database.
    assert in_db == {"heartbeats": beats["acked"], "reports": reports["created"]}, (in_db, out)
    figures.append(
        f"R8 fleet: {FLEET_AGENTS:,} agents for {args.duration:.0f} s on 2 workers, "
        f"{out['requests']:,} requests: heartbeats {beats['rate']:,.0f}/s p99 "
        f"{beats['p99_ms']:,.0f} ms, reports {reports['rate']:,.0f}/s p99 "
        f"{reports['p99_ms']:,.0f} ms, all p50 {out['p50_ms']:,.0f} ms p99 {out['p99_ms']:,.0f} "
        f"ms, 0 errors, {in_db['heartbeats']:,}/{beats['acked']:,} heartbeats and "
        f"{in_db['reports']:,}/{reports['created']:,} reports in the database "
        f"(generator lag p99 {out['lag_p99_ms']:,.0f} ms, load {os.getloadavg()[0]:.1f})"
    )
