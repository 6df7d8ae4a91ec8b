"""P6 dashboard pages at scale: the fleet page at 10,000 hosts / 1,000,000 snapshots (the P4
dataset, loaded by p4_fleet_status.load into its own kept database) and a host page with
1,000 snapshots, beside GET /api/v1/fleet/status in the same run.

Timed interleaved, each --repeat times (median quoted), against one `saveos server` process,
full body read over loopback HTTP:
  api          GET /api/v1/fleet/status (the baseline: the same fleet_status() underneath)
  fleet        GET /fleet (worst first, 50 rows: what an operator opens)
  fleet_search GET /fleet?q=host-09&sort=name&page=3 (search, sort, a later page)
  fleet_label  GET /fleet?label=env=prod (a label filter: one indexed query more)
  host         GET /hosts/host-p6-1000 (1,000 snapshots: table page, charts' series, history)
Besides wall time, the CPU seconds of the API process and its PostgreSQL backends.
Goals: fleet <= 1.5x api and < 500 ms; host < 200 ms.

    python benchmarks/p6_dashboard.py [--agents 10000] [--snapshots 1000000] [--repeat 7]
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _common import Api, cpu_seconds, median_fields, medians, run_line  # noqa: E402
from p4_fleet_status import _copy, fleet_args, fleet_db, fleet_finish, server_pids  # noqa: E402

HOST = "host-p6-1000"
HOST_SNAPSHOTS = 1000
GOAL_FLEET_RATIO, GOAL_FLEET_S, GOAL_HOST_S = 1.5, 0.5, 0.2
PAGES = {
    "fleet": "/fleet",
    "fleet_search": "/fleet?q=host-09&sort=name&page=3",
    "fleet_label": "/fleet?label=env%3Dprod",
    "host": f"/hosts/{HOST}",
}


def add_host(dsn: str) -> None:
    """One more agent with 1,000 daily snapshots (the P4 agents have 100), once; and a label
    on every tenth agent for the label filter."""
    now = datetime.now(UTC)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM agents WHERE name = %s", (HOST,))
        if cur.fetchone():
            return
        cur.execute(
            "INSERT INTO agents (name, labels, backup_interval_s, backup_grace_s, "
            "heartbeat_interval_s, created_at, last_heartbeat_at, heartbeat_count) "
            "VALUES (%s, %s, 86400, 3600, 60, %s, %s, 1) RETURNING id",
            (HOST, '{"env": "prod"}', now - timedelta(days=HOST_SNAPSHOTS + 1), now),
        )
        agent_id = cur.fetchone()[0]
        rows = []
        for day in range(HOST_SNAPSHOTS):
            finished = now - timedelta(days=day, seconds=60)
            size = 10**9 + day * 10**6
            rows.append(
                (agent_id, f"p6d{day}", "/var/lib/saveos/repo", f"{HOST}-{finished:%Y-%m-%d}",
                 finished - timedelta(seconds=600), finished, 300.0 + day % 60, 10**5, size,
                 size // 2, size // 50, "ok", 0, "[]", finished)
            )  # fmt: skip
        _copy(
            cur,
            "snapshots",
            "agent_id, report_id, repository, archive, started_at, finished_at, duration_s, "
            "nfiles, original_size, compressed_size, deduplicated_size, exit_status, rc, "
            "warnings, received_at",
            rows,
        )
        cur.execute("""UPDATE agents SET labels = '{"env": "prod"}' WHERE id % 10 = 0""")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE agents")
        cur.execute("VACUUM ANALYZE snapshots")
    conn.close()


def login(api: Api) -> httpx.Client:
    client = httpx.Client(base_url=api.url, timeout=120)
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]*)"', form.text).group(1)
    r = client.post("/login", data={"token": api.admin_token, "csrf_token": csrf})
    assert r.status_code == 303, r.text[-500:]
    assert "saveos_session" in client.cookies, "login failed"
    return client


def timed(client: httpx.Client, path: str, pids: list[int], headers=None) -> tuple[float, float]:
    cpu0 = cpu_seconds(pids)
    start = time.perf_counter()
    resp = client.get(path, headers=headers)
    elapsed = time.perf_counter() - start
    resp.raise_for_status()
    assert len(resp.content) > 1000, (path, resp.text[:500])
    return elapsed, cpu_seconds(pids) - cpu0


def main() -> int:
    args = fleet_args(__doc__, snapshots=1_000_000, repeat=7, name="p6_dashboard")
    import os

    keys = ("api", *PAGES)
    times: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    loadavg = []
    with (
        tempfile.TemporaryDirectory(prefix="saveos-p6-") as tmp,
        fleet_db(args, "saveos_bench_p6") as (url, counts),
    ):
        dsn = url.replace("postgresql+psycopg2://", "postgresql://")
        add_host(dsn)
        print(f"data: {counts} + {HOST} with {HOST_SNAPSHOTS} snapshots", flush=True)
        with Api(url, Path(tmp) / "api") as api:
            client = login(api)
            pids = server_pids(api, url)
            for path in ("/api/v1/fleet/status", *PAGES.values()):  # warm both sides once
                timed(client, path, pids, api.admin_headers)
            for i in range(args.repeat):
                loadavg.append(os.getloadavg()[0])
                pids = server_pids(api, url)
                wall, used = timed(client, "/api/v1/fleet/status", pids, api.admin_headers)
                times["api"].append(wall)
                cpu["api"].append(used)
                for key, path in PAGES.items():
                    wall, used = timed(client, path, pids)
                    times[key].append(wall)
                    cpu[key].append(used)
                print(
                    run_line(i, loadavg[-1], times)
                    + f" | fleet/api {times['fleet'][-1] / times['api'][-1]:.2f}x",
                    flush=True,
                )
    med, med_cpu = medians(times), medians(cpu)
    summary = {
        **median_fields(med, med_cpu),
        "fleet_vs_api": med["fleet"] / med["api"],
        "fleet_search_vs_api": med["fleet_search"] / med["api"],
        "fleet_label_vs_api": med["fleet_label"] / med["api"],
        "per_run_fleet_vs_api": [f / a for f, a in zip(times["fleet"], times["api"], strict=True)],
        "loadavg_1min": loadavg,
    }
    summary["goal_met_fleet"] = (
        summary["fleet_vs_api"] <= GOAL_FLEET_RATIO and med["fleet"] < GOAL_FLEET_S
    )
    summary["goal_met_host"] = med["host"] < GOAL_HOST_S
    print(
        "median: "
        + ", ".join(
            f"{k} {v * 1000:.0f} ms (CPU {med_cpu[k] * 1000:.0f} ms)" for k, v in med.items()
        )  # noqa: E501
        + f"; fleet page {summary['fleet_vs_api']:.2f}x the API call"
        + f" (goal <= {GOAL_FLEET_RATIO}x and < {GOAL_FLEET_S * 1000:.0f} ms:"
        + f" {summary['goal_met_fleet']}), host page goal < {GOAL_HOST_S * 1000:.0f} ms:"
        + f" {summary['goal_met_host']}"
    )
    return fleet_finish(args, counts, summary, times=times, cpu=cpu)


if __name__ == "__main__":
    raise SystemExit(main())
