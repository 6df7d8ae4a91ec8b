"""P3 on HTTPS beside plain HTTP: the heartbeat benchmark (p3_heartbeat.py) per transport and
per number of requests an agent sends on one connection, with the TLS cost as the ratio to
plain HTTP in the same run.

    python benchmarks/p3_tls.py [--agents 64] [--workers 2] [--duration 8] [--repeat 3]
        [--procs 2]

Cases, each on a fresh server and database, interleaved per repetition:
- keep-alive: one connection per simulated agent for the whole run (the daemon between two
  heartbeats closer than uvicorn's 5 s keep-alive; a job's progress updates every 2 s);
- a new connection every 4 requests: an agent run that sends 4 (heartbeat, reports, progress)
  over the one connection the agent keeps for its run;
- a new connection per heartbeat: what a heartbeat started by its systemd timer does (one
  request, one process: a full TLS handshake every time; the standard library cannot keep a
  TLS session across processes).
Per case: heartbeats/s, p50/p99, server CPU per heartbeat (the API's processes) and the load
generator's own CPU per heartbeat: on this one 2-core machine they compete, so the server's
capacity, 1000 / server CPU ms heartbeats per core-second, is the figure to read beside the
rate. /proc/loadavg is recorded before and after every case.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, median  # noqa: E402
from p3_heartbeat import GOAL_P99_MS, GOAL_RATE, one_run  # noqa: E402

PER_CONNECTION = {"keep-alive": 0, "4 per connection": 4, "new connection each": 1}
CASES = [(s, mode) for mode in PER_CONNECTION for s in ("http", "https")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--name", default="p3_tls")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {f"{s} {m}": [] for s, m in CASES}
    with tempfile.TemporaryDirectory(prefix="saveos-p3tls-", ignore_cleanup_errors=True) as tmp:
        for i in range(args.repeat):
            for scheme, mode in CASES:
                name = f"{scheme} {mode}"
                case = argparse.Namespace(
                    **vars(args), tls=scheme == "https", per_connection=PER_CONNECTION[mode]
                )
                where = Path(tmp) / f"{i}-{scheme}-{PER_CONNECTION[mode]}"
                try:
                    hb = one_run(case, where, False)["heartbeat"]
                except RuntimeError as exc:  # a worker that did not start on a loaded machine
                    print(f"run {i + 1} {name}: {str(exc).splitlines()[0]}; once more", flush=True)
                    hb = one_run(case, where.with_name(where.name + "-again"), False)["heartbeat"]
                runs[name].append(hb)
                print(
                    f"run {i + 1} {name:28} {hb['rate']:6.0f}/s  p50 {hb['p50_ms']:6.1f} ms"
                    f"  p99 {hb['p99_ms']:6.1f} ms  server {hb['server_cpu_ms_per_req']:.3f}"
                    f" ms/beat  client {hb['client_cpu_ms_per_req']:.3f} ms/beat  errors"
                    f" {hb['errors']}  stored==acked {hb['stored_equals_acked']}  load"
                    f" {hb['loadavg_1m'][0]:.1f}->{hb['loadavg_1m'][1]:.1f}",
                    flush=True,
                )
    results: dict[str, dict] = {}
    for name, hbs in runs.items():
        server_ms = median([h["server_cpu_ms_per_req"] for h in hbs])
        results[name] = {
            "heartbeats_per_s": median([h["rate"] for h in hbs]),
            "p50_ms": median([h["p50_ms"] for h in hbs]),
            "p99_ms": median([h["p99_ms"] for h in hbs]),
            "errors": sum(h["errors"] for h in hbs),
            "all_acked_stored": all(h["stored_equals_acked"] for h in hbs),
            "server_cpu_ms_per_heartbeat": server_ms,
            "client_cpu_ms_per_heartbeat": median([h["client_cpu_ms_per_req"] for h in hbs]),
            "server_capacity_per_core_s": 1000 / server_ms,
            "loadavg_1m": [h["loadavg_1m"] for h in hbs],
            "runs": hbs,
        }
    print("medians:")
    for mode in PER_CONNECTION:
        plain, tls = results[f"http {mode}"], results[f"https {mode}"]
        ratio = tls["heartbeats_per_s"] / plain["heartbeats_per_s"]
        cpu_ratio = tls["server_cpu_ms_per_heartbeat"] / plain["server_cpu_ms_per_heartbeat"]
        two_cores = 2 * tls["server_capacity_per_core_s"]
        print(
            f"{mode:20} https {tls['heartbeats_per_s']:6.0f}/s p99 {tls['p99_ms']:6.1f} ms,"
            f" http {plain['heartbeats_per_s']:6.0f}/s p99 {plain['p99_ms']:6.1f} ms:"
            f" rate {ratio:.2f}x; server CPU {tls['server_cpu_ms_per_heartbeat']:.3f} vs"
            f" {plain['server_cpu_ms_per_heartbeat']:.3f} ms/beat ({cpu_ratio:.2f}x), HTTPS"
            f" capacity of 2 server cores {two_cores:.0f}/s; goal (>= {GOAL_RATE}/s, p99 <"
            f" {GOAL_P99_MS} ms) on HTTPS measured:"
            f" {tls['heartbeats_per_s'] >= GOAL_RATE and tls['p99_ms'] < GOAL_P99_MS}"
        )
        results[f"tls_ratio {mode}"] = {"rate_ratio": ratio, "server_cpu_ratio": cpu_ratio}
    return finish(args.name, {"params": vars(args), "results": results})


if __name__ == "__main__":
    raise SystemExit(main())
