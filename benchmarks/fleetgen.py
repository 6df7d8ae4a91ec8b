"""Open-loop fleet load on the P3 generator's raw HTTP/1.1 connections (benchmarks/loadgen.py).

N agents (one token each, from --tokens) on a schedule: every agent heartbeats every
--beat-every seconds at a random phase, and reports arrive at --reports-per-s over the whole
fleet, each with a new report id (`@ID@` in --report-body) from a random agent. Requests are
sent at their scheduled time whatever the answers before them (open loop: a slow server does
not slow the offered load down), over --connections keep-alive connections per process; a
request's latency counts from its scheduled time, so a wait for a free connection counts too.
--baseline PATH sends the same schedule as `GET PATH` (e.g. /livez: no database).

Prints one JSON line: per kind (heartbeat, report) sent, acked (2xx), created (201), duplicate
(200 to a report), errors, p50/p99/max; the generator's own CPU and how late it dispatched
(`lag_p99_ms`: near 0 while the generator is not the bottleneck).

    python benchmarks/fleetgen.py --url http://127.0.0.1:PORT --tokens FILE --duration 60 \
        --beat-every 10 --reports-per-s 100 --report-body "$(cat snapshot.json)"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path

from loadgen import _request, exchange, fan_out

sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from report_support import snapshot_report  # noqa: E402

HEARTBEAT_PATH = "/api/v1/agents/heartbeat"
HEARTBEAT = b'{"agent_version": "0.1.0", "borg_version": "1.2.4", "os": "Debian 12"}'
KINDS = ("heartbeat", "report")


def snapshot_body() -> str:
    """A snapshot report for --report-body: every @ID@ becomes a new id per request."""
    return json.dumps(snapshot_report(report_id="@ID@", archive="fleet-@ID@"))


def provision(url: str, admin_headers: dict, agents: int, path: Path, verify=True) -> None:
    """`agents` agents in calls of 1,000 to the bulk endpoint; their tokens to `path` (0600)."""
    import httpx

    tokens: list[str] = []
    with httpx.Client(base_url=url, headers=admin_headers, timeout=300, verify=verify) as client:
        for first in range(0, agents, 1000):
            names = [f"fleet-{i:05d}" for i in range(first, min(agents, first + 1000))]
            resp = client.post(
                "/api/v1/agents/provision-batch", json={"agents": [{"name": n} for n in names]}
            )
            resp.raise_for_status()
            tokens += [agent["token"] for agent in resp.json()["agents"]]
    path.write_text("\n".join(tokens) + "\n")
    path.chmod(0o600)


def stored(db_url: str) -> dict[str, int]:
    """What the database holds: heartbeats counted on the agents, snapshot rows."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            beats = conn.execute(sa.text("SELECT sum(heartbeat_count) FROM agents")).scalar()
            reports = conn.execute(sa.text("SELECT count(*) FROM snapshots")).scalar()
    finally:
        engine.dispose()
    return {"heartbeats": int(beats or 0), "reports": int(reports)}


def command(url: str, tokens: Path, args, baseline: str | None = None) -> list[str]:
    """The generator's command line (benchmarks/r8_fleet.py and the R8 test run it)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--url", url, "--tokens", str(tokens)]
    for name in ("duration", "warmup", "beat_every", "reports_per_s", "connections", "procs"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--report-body", snapshot_body()]
    if baseline:
        cmd += ["--baseline", baseline]
    return cmd


def _schedule(args, agents: int, rate: float, rng: random.Random) -> list[tuple[float, int, int]]:
    """(seconds from the start, kind index, agent index), in time order."""
    total = args.warmup + args.duration
    events = []
    for agent in range(agents):
        at = rng.uniform(0, args.beat_every)
        while at < total:
            events.append((at, 0, agent))
            at += args.beat_every
    if rate > 0:
        for i in range(int(rate * total)):
            events.append(((i + rng.random()) / rate, 1, rng.randrange(agents)))
    events.sort()
    return events


def _new_stats() -> dict:
    return {
        kind: {"sent": 0, "acked": 0, "created": 0, "duplicate": 0, "errors": 0, "lat": []}
        for kind in KINDS
    }


async def _worker(host, port, queue, stats, measure_from, baseline) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (item := await queue.get()) is not None:
            due, kind, raw = item
            counts = stats[KINDS[kind]]
            counts["sent"] += 1
            status = await exchange(reader, writer, raw)
            if status is None:
                counts["errors"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            end = time.perf_counter()
            if 200 <= status < 300:
                counts["acked"] += 1
                counts["created"] += status == 201
                counts["duplicate"] += kind == 1 and status == 200 and not baseline
            else:
                counts["errors"] += 1
                counts[f"status_{status}"] = counts.get(f"status_{status}", 0) + 1
            if due >= measure_from:
                counts["lat"].append(end - due)
    finally:
        writer.close()


async def _run(args, tokens: list[str], rate: float, seed: int) -> tuple[dict, list[float]]:
    host, _, port = args.url.partition("://")[2].partition(":")
    port = int(port.rstrip("/"))
    rng = random.Random(seed)
    events = _schedule(args, len(tokens), rate, rng)
    target = f"{host}:{port}"
    floor = None
    if args.baseline:
        floor = _request("GET", target, args.baseline, None, b"")
        beats = [floor] * len(tokens)
    else:
        beats = [_request("POST", target, HEARTBEAT_PATH, t, HEARTBEAT) for t in tokens]
    template = args.report_body.encode()
    stats = _new_stats()
    queue: asyncio.Queue = asyncio.Queue()
    start = time.perf_counter() + 0.5
    workers = [
        asyncio.create_task(
            _worker(host, port, queue, stats, start + args.warmup, bool(args.baseline))
        )
        for _ in range(args.connections)
    ]
    lags: list[float] = []
    i = 0
    while i < len(events):
        now = time.perf_counter()
        # Everything due by now goes out at once; then sleep until the next one is due.
        while i < len(events) and start + events[i][0] <= now:
            at, kind, agent = events[i]
            lags.append(now - (start + at))
            if kind == 0 or args.baseline:
                raw = beats[agent] if kind == 0 else floor
            else:
                body = template.replace(b"@ID@", uuid.uuid4().hex.encode())
                raw = _request("POST", target, args.report_path, tokens[agent], body)
            queue.put_nowait((start + at, kind, raw))
            i += 1
        if i < len(events):
            await asyncio.sleep(max(0.0, start + events[i][0] - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(None)
    done, pending = await asyncio.wait(workers, timeout=args.drain)
    for task in pending:
        task.cancel()
    left = 0
    while not queue.empty():
        left += queue.get_nowait() is not None
    stats["unanswered"] = left + len(pending)  # still queued, or a request in flight
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    return stats, lags


def _in_process(args, tokens, rate, seed):
    import resource

    try:
        from uvloop import new_event_loop
    except ImportError:
        new_event_loop = None
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        stats, lags = runner.run(_run(args, tokens, rate, seed))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    return stats, lags


def _pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")


def main(args) -> dict:
    tokens = [t for t in Path(args.tokens).read_text().split() if t]
    procs = max(1, args.procs)
    rate = args.reports_per_s / procs
    parts = fan_out(
        _in_process, [(args, tokens[i::procs], rate, args.seed + i) for i in range(procs)]
    )
    out: dict = {"agents": len(tokens), "duration_s": args.duration}
    every: list[float] = []
    for kind in KINDS:
        merged: dict = {}
        for stats, _ in parts:
            for key, value in stats[kind].items():
                merged[key] = merged.get(key, [] if key == "lat" else 0) + value
        lat = sorted(merged.pop("lat"))
        every += lat
        merged.update(p50_ms=_pct(lat, 0.5), p99_ms=_pct(lat, 0.99), max_ms=_pct(lat, 1.0))
        merged["rate"] = len(lat) / args.duration
        out[kind] = merged
    every.sort()
    lags = sorted(x for _, part_lags in parts for x in part_lags)
    out.update(
        requests=sum(out[k]["sent"] for k in KINDS),
        errors=sum(out[k]["errors"] for k in KINDS),
        unanswered=sum(stats["unanswered"] for stats, _ in parts),
        p50_ms=_pct(every, 0.5),
        p99_ms=_pct(every, 0.99),
        lag_p99_ms=_pct(lags, 0.99),
        lag_max_ms=_pct(lags, 1.0),
        client_cpu_s=sum(stats["client_cpu_s"] for stats, _ in parts),
    )
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--tokens", required=True, help="file with one agent token per line")
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--warmup", type=float, default=5, help="seconds sent but not measured")
    p.add_argument("--beat-every", type=float, default=10)
    p.add_argument("--reports-per-s", type=float, default=100)
    p.add_argument("--report-path", default="/api/v1/reports/snapshots")
    p.add_argument("--report-body", default="", help="JSON; each @ID@ becomes a new id")
    p.add_argument("--connections", type=int, default=128, help="per process")
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--baseline", help="the same schedule as GET of this path")
    p.add_argument("--drain", type=float, default=60, help="seconds to wait for answers")
    p.add_argument("--seed", type=int, default=19)
    return p


if __name__ == "__main__":
    print(json.dumps(main(parser().parse_args())))
