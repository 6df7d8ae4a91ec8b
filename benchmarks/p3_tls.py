"""P3 on HTTPS beside plain HTTP: the heartbeat benchmark (p3_heartbeat.py) once per transport,
on keep-alive connections and with a new connection per heartbeat (what the agent's urllib
does; on HTTPS a full TLS handshake each time), and the TLS cost as the ratio to plain HTTP.

    python benchmarks/p3_tls.py [--agents 128] [--workers 2] [--duration 20] [--repeat 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result  # noqa: E402
from p3_heartbeat import GOAL_P99_MS, GOAL_RATE, one_run  # noqa: E402

CASES = (
    ("http", False, False),
    ("https", True, False),
    ("http", False, True),
    ("https", True, True),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="saveos-p3tls-") as tmp:
        for scheme, tls, reconnect in CASES:
            name = f"{scheme}{' new connection each' if reconnect else ' keep-alive'}"
            runs = []
            for i in range(args.repeat):
                case = argparse.Namespace(**vars(args), tls=tls, reconnect=reconnect)
                runs.append(one_run(case, Path(tmp) / f"{scheme}-{reconnect}-{i}"))
            hb = [r["heartbeat"] for r in runs]
            results[name] = {
                "heartbeats_per_s": median([h["rate"] for h in hb]),
                "p50_ms": median([h["p50_ms"] for h in hb]),
                "p99_ms": median([h["p99_ms"] for h in hb]),
                "errors": sum(h["errors"] for h in hb),
                "all_acked_stored": all(h["stored_equals_acked"] for h in hb),
                "server_cpu_ms_per_heartbeat": median([h["server_cpu_ms_per_req"] for h in hb]),
            }
            r = results[name]
            print(
                f"{name:32} {r['heartbeats_per_s']:7.0f}/s  p50 {r['p50_ms']:6.1f} ms  p99"
                f" {r['p99_ms']:6.1f} ms  server CPU {r['server_cpu_ms_per_heartbeat']:.2f} ms/beat"
                f"  errors {r['errors']}  stored==acked {r['all_acked_stored']}",
                flush=True,
            )
    for mode in ("keep-alive", "new connection each"):
        plain, tls = results[f"http {mode}"], results[f"https {mode}"]
        ratio = tls["heartbeats_per_s"] / plain["heartbeats_per_s"]
        print(
            f"TLS cost, {mode}: {ratio:.2f}x the plain-HTTP rate, p99 {tls['p99_ms']:.1f} vs"
            f" {plain['p99_ms']:.1f} ms; goal (>= {GOAL_RATE}/s, p99 < {GOAL_P99_MS} ms) on"
            f" HTTPS: {tls['heartbeats_per_s'] >= GOAL_RATE and tls['p99_ms'] < GOAL_P99_MS}"
        )
        results[f"tls_ratio {mode}"] = {"rate_ratio": ratio}
    path = write_result("p3_tls", {"params": vars(args), "results": results})
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
