"""P4 fleet status at scale: 10,000 agents and 1,000,000 snapshots (plus checks and drills) in
PostgreSQL, loaded with COPY from a seeded generator.

Timed in the same run, interleaved, each --repeat times (median quoted):
  raw_sql    the hand-written LATERAL aggregate (the floor), psycopg2 in process, all rows fetched
             (server defaults, so PostgreSQL JIT-compiles it: its cost estimate passes
             jit_above_cost)
  raw_sql_nojit  the same with `SET jit = off`, as the API runs its query: the lower floor
  raw_psql   the same query through `psql` (a process that connects, queries, prints: the
             floor for a CLI)
  raw_latest the same answer by hand from agent_latest (migration 0004: each agent's latest
             report of every kind, kept by triggers), which is what the API reads: how much the
             API adds to its own query, beside how it compares with the aggregate over history
  api        GET /api/v1/fleet/status through HTTP, full body read
  cli        `saveos status --json` (process start, HTTP, JSON out)

Besides wall time, each run records CPU seconds from /proc (user+system) of every process that
worked for the answer: client + PostgreSQL backend for raw_sql; API process + its backends for
api; the CLI process + API + backends for cli. On a shared machine wall time swings with the
load; CPU per request much less.

    python benchmarks/p4_fleet_status.py [--agents 10000] [--snapshots 1000000] [--repeat 5]

Longer than most modules on purpose: the data set, the baselines (raw SQL, psql) and the
measured commands belong in one script, so a figure is reproduced by one command.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _common import (  # noqa: E402
    PG_ADMIN,
    Api,
    _pg_exec,
    cpu_seconds,
    finish,
    median_fields,
    medians,
    pg_backend_pids,
    run_cli,
    run_line,
    scratch_pg,
)

GOAL_S, GOAL_RATIO = 1.0, 2.0
RAW_SQL = """
SELECT a.id, a.name, a.created_at, a.backup_interval_s, a.backup_grace_s,
       a.heartbeat_interval_s, a.last_heartbeat_at,
       ls.exit_status, gs.finished_at, gs.archive, gs.original_size, gs.deduplicated_size,
       lc.finished_at, lc.result, ld.finished_at, ld.result
FROM agents a
LEFT JOIN LATERAL (SELECT exit_status FROM snapshots s WHERE s.agent_id = a.id
    AND s.finished_at <= now() ORDER BY s.finished_at DESC, s.id DESC LIMIT 1) ls ON true
LEFT JOIN LATERAL (SELECT finished_at, archive, original_size, deduplicated_size
    FROM snapshots s WHERE s.agent_id = a.id AND s.finished_at <= now()
    AND s.exit_status IN ('ok', 'warning')
    ORDER BY s.finished_at DESC, s.id DESC LIMIT 1) gs ON true
LEFT JOIN LATERAL (SELECT finished_at, result FROM check_results c WHERE c.agent_id = a.id
    AND c.finished_at <= now() ORDER BY c.finished_at DESC, c.id DESC LIMIT 1) lc ON true
LEFT JOIN LATERAL (SELECT finished_at, result FROM drill_results d WHERE d.agent_id = a.id
    AND d.finished_at <= now() ORDER BY d.finished_at DESC, d.id DESC LIMIT 1) ld ON true
WHERE a.decommissioned_at IS NULL OR a.decommissioned_at > now()
ORDER BY a.name
"""

RAW_LATEST_SQL = """
SELECT a.id, a.name, a.created_at, a.backup_interval_s, a.backup_grace_s,
       a.heartbeat_interval_s, a.last_heartbeat_at, l.snapshot_exit_status,
       l.last_successful_finished_at, l.last_successful_archive, l.last_successful_original_size,
       l.last_successful_deduplicated_size, l.check_finished_at, l.check_result,
       l.drill_finished_at, l.drill_result
FROM agents a LEFT JOIN agent_latest l ON l.agent_id = a.id
WHERE a.decommissioned_at IS NULL OR a.decommissioned_at > now()
ORDER BY a.name
"""


def _copy(cur, table: str, columns: str, rows) -> None:
    buf = io.StringIO()
    for count, row in enumerate(rows, 1):
        buf.write("\t".join(r"\N" if v is None else str(v) for v in row) + "\n")
        if count % 100_000 == 0:
            buf.seek(0)
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buf)
            buf = io.StringIO()
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buf)


def load(url: str, agents: int, snapshots: int, seed: int = 9) -> dict:
    """Seeded fleet: most agents healthy, some late/overdue/failing/silent/never."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    per_agent = snapshots // agents
    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    start = time.perf_counter()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        _copy(
            cur,
            "agents",
            "id, name, labels, agent_version, borg_version, os, backup_interval_s, "
            "backup_grace_s, heartbeat_interval_s, created_at, last_heartbeat_at, heartbeat_count",
            (
                (
                    i,
                    f"host-{i:05d}",
                    "{}",
                    "0.1.0",
                    "1.2.4",
                    "Debian 12",
                    86400,
                    3600,
                    60,
                    now - timedelta(days=per_agent + 1),
                    # 2% silent: no heartbeat for an hour
                    now - timedelta(seconds=3600 if rng.random() < 0.02 else rng.randint(0, 90)),
                    1000,
                )
                for i in range(1, agents + 1)
            ),
        )
        cur.execute("SELECT setval('agents_id_seq', %s)", (agents,))

        def snaps():
            for agent in range(1, agents + 1):
                lag = rng.choice([0] * 90 + [1] * 5 + [2] * 5)  # days behind: late / overdue
                for day in range(per_agent):
                    finished = now - timedelta(days=day + lag, seconds=rng.randint(0, 3000))
                    status = "error" if rng.random() < 0.01 else "ok"
                    size = rng.randint(10**8, 10**10)
                    yield (
                        agent,
                        f"r{agent}d{day}",
                        "/var/lib/saveos/repo",
                        f"host-{agent:05d}-{finished:%Y-%m-%dT%H:%M:%S}",
                        finished - timedelta(seconds=600),
                        finished,
                        600.0,
                        rng.randint(10**4, 10**6),
                        size,
                        size // 2,
                        size // 50,
                        status,
                        2 if status == "error" else 0,
                        "[]",
                        finished,
                    )

        _copy(
            cur,
            "snapshots",
            "agent_id, report_id, repository, archive, started_at, finished_at, duration_s, "
            "nfiles, original_size, compressed_size, deduplicated_size, exit_status, rc, "
            "warnings, received_at",
            snaps(),
        )

        def checks():
            for agent in range(1, agents + 1):
                for week in range(per_agent // 7):
                    finished = now - timedelta(days=7 * week, seconds=rng.randint(0, 3000))
                    result = "error" if rng.random() < 0.005 else "ok"
                    yield (
                        agent,
                        f"c{agent}w{week}",
                        "/var/lib/saveos/repo",
                        finished,
                        finished,
                        "false",
                        result,
                        0 if result == "ok" else 1,
                        finished,
                    )

        _copy(
            cur,
            "check_results",
            "agent_id, report_id, repository, started_at, finished_at, verify_data, result, rc, "
            "received_at",
            checks(),
        )

        def drills():
            for agent in range(1, agents + 1):
                for month in range(per_agent // 30):
                    finished = now - timedelta(days=30 * month, seconds=rng.randint(0, 3000))
                    yield (
                        agent,
                        f"d{agent}m{month}",
                        "a",
                        finished,
                        finished,
                        100,
                        100,
                        0,
                        "pass",
                        finished,
                    )

        _copy(
            cur,
            "drill_results",
            "agent_id, report_id, archive, started_at, finished_at, files_checked, "
            "files_matched, files_mismatched, result, received_at",
            drills(),
        )
        conn.commit()
    conn = psycopg2.connect(dsn)
    conn.autocommit = True  # VACUUM refuses to run in a transaction
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
        counts = {}
        for table in ("agents", "snapshots", "check_results", "drill_results"):
            cur.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
    conn.close()
    counts["load_s"] = time.perf_counter() - start
    return counts


def fleet_args(doc: str, *, snapshots: int, repeat: int, name: str) -> argparse.Namespace:
    """The command line of a benchmark on the P4 dataset (what fleet_db reads, and its own
    --repeat and --name defaults)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=snapshots)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--name", default=name)
    parser.add_argument("--fresh", action="store_true", help="load into a scratch database")
    return parser.parse_args()


def fleet_finish(args, counts: dict, summary: dict, **series) -> int:
    """finish() for a benchmark on the P4 dataset: the params, the data loaded, the summary and
    every run's `series`."""
    return finish(args.name, {"params": vars(args), "data": counts, "summary": summary, **series})


@contextmanager
def fleet_db(args, prefix: str = "saveos_bench_p4"):
    """The loaded database: kept between runs (loading takes minutes) unless --fresh.

    Every run brings the kept database to the current schema head first, the way an operator
    upgrades a live one. `prefix` names it (each benchmark keeps its own copy, so one branch's
    migrations never make another's run reload it).
    """
    from saveos_api import migrations

    if args.fresh:
        with scratch_pg() as url:
            migrations.upgrade(url)
            yield url, load(url, args.agents, args.snapshots)
        return
    name = f"{prefix}_{args.agents}_{args.snapshots}"
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    with psycopg2.connect(PG_ADMIN.replace("postgresql+psycopg2://", "postgresql://")) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            exists = cur.fetchone() is not None
    marker = Path(tempfile.gettempdir()) / f"{name}.loaded.json"
    if exists and marker.exists():
        from alembic.util import CommandError

        try:
            migrations.upgrade(url)
        except CommandError as exc:  # stamped by a revision this checkout does not have
            print(f"reloading {name}: {exc}", flush=True)
        else:
            yield url, {**json.loads(marker.read_text()), "reused": True}
            return
    _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _pg_exec(f'CREATE DATABASE "{name}"')
    migrations.upgrade(url)
    counts = load(url, args.agents, args.snapshots)
    marker.write_text(json.dumps(counts))
    yield url, counts


def time_raw_sql(dsn: str, jit: bool = True, sql: str = RAW_SQL) -> tuple[float, float]:
    """(wall, CPU of this process + its backend) for a raw query."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        if not jit:
            cur.execute("SET jit = off")
        cur.execute("SELECT pg_backend_pid()")
        backend = [cur.fetchone()[0]]
        cpu0, own0 = cpu_seconds(backend), time.process_time()
        start = time.perf_counter()
        cur.execute(sql)
        rows = cur.fetchall()
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(backend) - cpu0 + time.process_time() - own0
    assert rows, "no rows"
    return elapsed, cpu


def time_psql(dsn: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["psql", "-X", "-q", "-A", "-d", dsn, "-c", RAW_SQL], check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def server_pids(api: Api, url: str) -> list[int]:
    """The API process and the backends serving the benchmark database (only it uses it)."""
    return [api.proc.pid, *pg_backend_pids(url)]


def time_api(api: Api, pids: list[int]) -> tuple[float, int, float]:
    cpu0 = cpu_seconds(pids)
    start = time.perf_counter()
    resp = httpx.get(api.url + "/api/v1/fleet/status", headers=api.admin_headers, timeout=120)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pids) - cpu0
    resp.raise_for_status()
    return elapsed, len(resp.json()["agents"]), cpu


def time_cli(api: Api, pids: list[int]) -> tuple[float, float, float]:
    """(wall, CPU of the CLI process, CPU of CLI + API + backends)."""
    server0 = cpu_seconds(pids)
    proc, elapsed, own = run_cli(api, ["status", "--json"])
    total = own + cpu_seconds(pids) - server0
    if proc.returncode not in (0, 2):  # 2: some hosts need attention, which the data has
        print(f"saveos status failed ({proc.returncode}): {proc.stderr.strip()}", flush=True)
        return float("inf"), own, total
    return elapsed, own, total


def main() -> int:
    args = fleet_args(__doc__, snapshots=1_000_000, repeat=5, name="p4_fleet_status")
    with tempfile.TemporaryDirectory(prefix="saveos-p4-") as tmp, fleet_db(args) as (url, counts):
        print(f"data: {counts}", flush=True)
        dsn = url.replace("postgresql+psycopg2://", "postgresql://")
        times: dict[str, list[float]] = {
            "raw_sql": [],
            "raw_sql_nojit": [],
            "raw_psql": [],
            "raw_latest": [],
            "api": [],
            "cli": [],
        }
        cpu: dict[str, list[float]] = {"raw_sql": [], "raw_sql_nojit": [], "api": [], "cli": []}
        cpu["cli_process"] = []
        loadavg = []
        with Api(url, Path(tmp) / "api") as api:
            pids = server_pids(api, url)
            time_api(api, pids)  # warm caches on both sides once
            time_raw_sql(dsn)
            for i in range(args.repeat):
                loadavg.append(os.getloadavg()[0])
                for key, jit in (("raw_sql", True), ("raw_sql_nojit", False)):
                    wall, used = time_raw_sql(dsn, jit=jit)
                    times[key].append(wall)
                    cpu[key].append(used)
                pids = server_pids(api, url)
                api_s, n, used = time_api(api, pids)
                assert n == args.agents, n
                times["api"].append(api_s)
                cpu["api"].append(used)
                times["raw_psql"].append(time_psql(dsn))
                times["raw_latest"].append(time_raw_sql(dsn, jit=False, sql=RAW_LATEST_SQL)[0])
                wall, own, used = time_cli(api, pids)
                times["cli"].append(wall)
                cpu["cli_process"].append(own)
                cpu["cli"].append(used)
                print(
                    run_line(i, loadavg[-1], times)
                    + f" | API/raw {times['api'][-1] / times['raw_sql'][-1]:.2f}x"
                    + f", CLI/psql {times['cli'][-1] / times['raw_psql'][-1]:.2f}x"
                    + " | CPU "
                    + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in cpu.items()),
                    flush=True,
                )
    med, med_cpu = medians(times), medians(cpu)
    summary = {
        **median_fields(med, med_cpu),
        "api_vs_raw_sql": med["api"] / med["raw_sql"],
        "api_vs_raw_sql_nojit": med["api"] / med["raw_sql_nojit"],
        "api_vs_raw_latest": med["api"] / med["raw_latest"],
        "cli_vs_raw_psql": med["cli"] / med["raw_psql"],
        "cli_vs_raw_sql": med["cli"] / med["raw_sql"],
        "per_run_api_vs_raw_sql": [
            a / r for a, r in zip(times["api"], times["raw_sql"], strict=True)
        ],
        "per_run_cli_vs_raw_psql": [
            c / p for c, p in zip(times["cli"], times["raw_psql"], strict=True)
        ],
        "cpu_api_vs_raw_sql": med_cpu["api"] / med_cpu["raw_sql"],
        "cpu_api_vs_raw_sql_nojit": med_cpu["api"] / med_cpu["raw_sql_nojit"],
        "loadavg_1min": loadavg,
    }
    summary["goal_met_api"] = med["api"] < GOAL_S and summary["api_vs_raw_sql"] <= GOAL_RATIO
    summary["goal_met_cli"] = med["cli"] < GOAL_S and summary["cli_vs_raw_psql"] <= GOAL_RATIO
    print(
        f"median: raw SQL {med['raw_sql'] * 1000:.0f} ms, psql {med['raw_psql'] * 1000:.0f} ms, "
        f"API {med['api'] * 1000:.0f} ms ({summary['api_vs_raw_sql']:.2f}x raw SQL, "
        f"{summary['api_vs_raw_latest']:.2f}x its own query by hand, "
        f"{med['raw_latest'] * 1000:.0f} ms), "
        f"saveos status --json {med['cli'] * 1000:.0f} ms ({summary['cli_vs_raw_psql']:.2f}x psql, "
        f"{summary['cli_vs_raw_sql']:.2f}x raw SQL); "
        f"CPU: raw SQL {med_cpu['raw_sql'] * 1000:.0f} ms (no JIT "
        f"{med_cpu['raw_sql_nojit'] * 1000:.0f} ms), API {med_cpu['api'] * 1000:.0f} ms, "
        f"CLI {med_cpu['cli'] * 1000:.0f} ms of which its own process "
        f"{med_cpu['cli_process'] * 1000:.0f} ms; "
        f"goal < {GOAL_S:.0f} s and <= {GOAL_RATIO:.0f}x: "
        f"API {summary['goal_met_api']}, CLI {summary['goal_met_cli']}"
    )
    return fleet_finish(args, counts, summary, times=times, cpu=cpu)


if __name__ == "__main__":
    raise SystemExit(main())
