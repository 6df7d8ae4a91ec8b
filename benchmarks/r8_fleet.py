"""R8 at fleet scale: 10,000 agents heartbeating every 10 s and 100 snapshot reports a second
over the fleet, for 60 s, against `saveos server --workers 2` on a fresh PostgreSQL database.

Per repetition, on the same server: the baseline (the same schedule as `GET /livez`: the
framework and the generator, no database), then the fleet (benchmarks/fleetgen.py, the P3
generator's open-loop mode). Afterwards the database must hold exactly what was acknowledged:
sum(agents.heartbeat_count) = heartbeats answered 200, snapshot rows = reports answered 201.

    python benchmarks/r8_fleet.py [--agents 10000] [--duration 60] [--repeat 3] [--workers 2]
        [--beat-every 10] [--reports-per-s 100] [--connections 128] [--procs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Api, cpu_seconds, finish, median, pg_backend_pids, scratch_pg  # noqa: E402
from fleetgen import command, provision, stored  # noqa: E402

GOAL_P99_MS = 200


def generate(api: Api, tokens: Path, args, db_url: str, baseline: str | None = None) -> dict:
    """Run the generator; charge the server's and the database backends' CPU to it too."""
    server_cpu = cpu_seconds([api.proc.pid])
    backends = pg_backend_pids(db_url)
    db_cpu = cpu_seconds(backends)
    load_before = os.getloadavg()[0]
    out = subprocess.run(
        command(api.url, tokens, args, baseline), stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["loadavg_1m"] = [load_before, os.getloadavg()[0]]  # before, after
    result["server_cpu_s"] = cpu_seconds([api.proc.pid]) - server_cpu
    # Backends that existed before the run (the writers' own connections among them).
    result["db_cpu_s"] = cpu_seconds(backends) - db_cpu
    return result


def one_run(args, tmp: Path) -> dict:
    with scratch_pg() as url, Api(url, tmp / "api", workers=args.workers) as api:
        tokens = tmp / "tokens"
        started = time.monotonic()
        provision(api.url, api.admin_headers, args.agents, tokens)
        provision_s = time.monotonic() - started
        # One heartbeat each first, so that every writer lane has its connection.
        warm = argparse.Namespace(**{**vars(args), "duration": 1, "warmup": args.beat_every})
        warm.reports_per_s = 1
        subprocess.run(command(api.url, tokens, warm), stdout=subprocess.DEVNULL, check=True)
        before = stored(url)
        base = generate(api, tokens, args, url, baseline="/livez")
        fleet = generate(api, tokens, args, url)
        api.stop()
        after = stored(url)
    fleet["stored"] = {k: after[k] - before[k] for k in after}
    fleet["stored_equals_acked"] = (
        fleet["stored"]["heartbeats"] == fleet["heartbeat"]["acked"]
        and fleet["stored"]["reports"] == fleet["report"]["created"]
    )
    return {
        "provision_s": provision_s,
        "baseline": base,
        "fleet": fleet,
        "p99_ratio_to_baseline": fleet["p99_ms"] / base["p99_ms"],
    }


def _line(run: dict) -> str:
    f, b = run["fleet"], run["baseline"]
    hb, rep = f["heartbeat"], f["report"]
    return (
        f"fleet {f['requests']:,} requests: heartbeats {hb['rate']:.0f}/s p99 "
        f"{hb['p99_ms']:.1f} ms, reports {rep['rate']:.0f}/s p99 {rep['p99_ms']:.1f} ms, all "
        f"p50 {f['p50_ms']:.1f} p99 {f['p99_ms']:.1f} ms, errors {f['errors']}, unanswered "
        f"{f['unanswered']}, stored {f['stored']} = acked {f['stored_equals_acked']} | baseline "
        f"/livez p99 {b['p99_ms']:.1f} ms | p99 ratio {run['p99_ratio_to_baseline']:.2f} | "
        f"generator lag p99 {f['lag_p99_ms']:.1f} ms, CPU {f['client_cpu_s']:.1f} s; server "
        f"CPU {f['server_cpu_s']:.1f} s, db {f['db_cpu_s']:.1f} s | load {f['loadavg_1m']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--beat-every", type=float, default=10)
    parser.add_argument("--reports-per-s", type=float, default=100)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="r8_fleet")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="saveos-r8-") as tmp:
        for i in range(args.repeat):
            runs.append(one_run(args, Path(tmp) / str(i)))
            print(f"run {i + 1}: {_line(runs[-1])}", flush=True)
    fleet = [r["fleet"] for r in runs]
    summary = {
        "p50_ms": median([f["p50_ms"] for f in fleet]),
        "p99_ms": median([f["p99_ms"] for f in fleet]),
        "heartbeat_p99_ms": median([f["heartbeat"]["p99_ms"] for f in fleet]),
        "report_p99_ms": median([f["report"]["p99_ms"] for f in fleet]),
        "baseline_p99_ms": median([r["baseline"]["p99_ms"] for r in runs]),
        "p99_ratio_to_baseline": median([r["p99_ratio_to_baseline"] for r in runs]),
        "errors": sum(f["errors"] + f["unanswered"] for f in fleet),
        "all_stored_equals_acked": all(f["stored_equals_acked"] for f in fleet),
        "generator_lag_p99_ms": median([f["lag_p99_ms"] for f in fleet]),
    }
    summary["goal_met"] = (
        summary["p99_ms"] < GOAL_P99_MS
        and summary["errors"] == 0
        and summary["all_stored_equals_acked"]
    )
    print(
        f"median of {len(runs)}: p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms "
        f"(goal < {GOAL_P99_MS}; heartbeats {summary['heartbeat_p99_ms']:.1f}, reports "
        f"{summary['report_p99_ms']:.1f}), baseline /livez p99 {summary['baseline_p99_ms']:.1f} "
        f"ms, ratio {summary['p99_ratio_to_baseline']:.2f}; errors {summary['errors']}; stored = "
        f"acked: {summary['all_stored_equals_acked']}; goal met: {summary['goal_met']}"
    )
    params = {
        k: getattr(args, k)
        for k in ("agents", "workers", "duration", "warmup", "beat_every", "reports_per_s")
    }
    params.update(connections=args.connections, procs=args.procs, repeat=args.repeat)
    return finish(args.name, {"params": params, "summary": summary, "runs": runs})


if __name__ == "__main__":
    raise SystemExit(main())
