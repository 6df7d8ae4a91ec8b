"""P3 heartbeat ingest: the API under uvicorn on a fresh PostgreSQL database, N provisioned
agents heartbeating as fast as they can from a separate load-generator process.

Per repetition, on the same server: the framework floor (`GET /livez`, no database) and then
`POST /api/v1/agents/heartbeat`; afterwards the database must hold exactly as many heartbeats
as were acknowledged (each is answered only after its commit).

    python benchmarks/p3_heartbeat.py [--agents 128] [--workers 2] [--duration 30] [--repeat 3]
        [--tls] [--reconnect] [--procs 1]

--tls: the server on HTTPS with a certificate of `saveos ca init`, the load generator verifying
it against that CA (what agents do). --reconnect: a new connection per request, as an agent
started by its heartbeat timer opens one per heartbeat (with --tls: a full TLS handshake per
heartbeat). --procs: the load generator in that many processes.
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

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    Api,
    cpu_seconds,
    finish,
    median,
    pg_backend_pids,
    scratch_pg,
)

FLOOR_PATH = "/livez"
HEARTBEAT = json.dumps({"agent_version": "0.1.0", "borg_version": "1.2.4", "os": "Debian 12"})
GOAL_RATE, GOAL_P99_MS = 3000, 100


def provision(api: Api, n: int, path: Path) -> None:
    with httpx.Client(
        base_url=api.url, headers=api.admin_headers, timeout=30, verify=api.verify
    ) as client:
        tokens = []
        for i in range(n):
            resp = client.post("/api/v1/agents/provision", json={"name": f"bench-{i:04d}"})
            resp.raise_for_status()
            tokens.append(resp.json()["token"])
    path.write_text("\n".join(tokens) + "\n")
    path.chmod(0o600)


def load(api: Api, path: str, args, method="GET", body="", tokens=None, db_url=None) -> dict:
    """Run the generator; also charge the server's (and its database backends') CPU time."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "loadgen.py"), "--url", api.url]
    cmd += ["--path", path, "--method", method, "--concurrency", str(args.agents)]
    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    if body:
        cmd += ["--body", body]
    if tokens:
        cmd += ["--tokens", str(tokens)]
    if api.ca_file:
        cmd += ["--cafile", str(api.ca_file)]
    if getattr(args, "per_connection", 0):
        cmd += ["--per-connection", str(args.per_connection)]
    cmd += ["--procs", str(getattr(args, "procs", 1))]
    server_cpu = cpu_seconds([api.proc.pid])
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    backends = []
    if db_url:
        time.sleep(args.warmup)  # the writer's connection exists once heartbeats flow
        backends = pg_backend_pids(db_url)
    db_cpu = cpu_seconds(backends)
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["loadavg_1m"] = [load_before, os.getloadavg()[0]]  # before, after
    served = result["acked_total"] + result["errors"]
    result["server_cpu_ms_per_req"] = (cpu_seconds([api.proc.pid]) - server_cpu) * 1000 / served
    result["client_cpu_ms_per_req"] = result.pop("client_cpu_s") * 1000 / served
    if db_url:
        # Backends only from after warm-up: an approximation, the same for every version.
        result["db_cpu_s"] = cpu_seconds(backends) - db_cpu
    return result


def one_run(args, tmp: Path, floor: bool = True) -> dict:
    with scratch_pg() as url, Api(url, tmp / "api", workers=args.workers, tls=args.tls) as api:
        tokens = tmp / "tokens"
        provision(api, args.agents, tokens)
        floor = load(api, FLOOR_PATH, args) if floor else None
        hb = load(api, "/api/v1/agents/heartbeat", args, "POST", HEARTBEAT, tokens, url)
        api.stop()
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT sum(heartbeat_count) FROM agents")).scalar()
        engine.dispose()
    hb["stored"] = int(stored or 0)
    hb["stored_equals_acked"] = hb["stored"] == hb["acked_total"]
    ratio = hb["rate"] / floor["rate"] if floor else None
    return {"floor": floor, "heartbeat": hb, "ratio_to_floor": ratio}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="p3_heartbeat")
    parser.add_argument("--tls", action="store_true", help="HTTPS with the fleet's own CA")
    parser.add_argument("--reconnect", action="store_true", help="a new connection per request")
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes")
    args = parser.parse_args()
    args.per_connection = 1 if args.reconnect else 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="saveos-p3-") as tmp:
        for i in range(args.repeat):
            run = one_run(args, Path(tmp) / str(i))
            runs.append(run)
            hb, floor = run["heartbeat"], run["floor"]
            print(
                f"run {i + 1}: heartbeat {hb['rate']:.0f}/s p50 {hb['p50_ms']:.1f} ms "
                f"p99 {hb['p99_ms']:.1f} ms errors {hb['errors']} "
                f"stored==acked {hb['stored_equals_acked']} | floor {floor['rate']:.0f}/s "
                f"p99 {floor['p99_ms']:.1f} ms | ratio {run['ratio_to_floor']:.2f} | "
                f"server CPU/req: heartbeat {hb['server_cpu_ms_per_req']:.2f} ms, "
                f"floor {floor['server_cpu_ms_per_req']:.2f} ms | load {hb['loadavg_1m']}",
                flush=True,
            )
    summary = {
        "heartbeats_per_s": median([r["heartbeat"]["rate"] for r in runs]),
        "p50_ms": median([r["heartbeat"]["p50_ms"] for r in runs]),
        "p99_ms": median([r["heartbeat"]["p99_ms"] for r in runs]),
        "errors": sum(r["heartbeat"]["errors"] for r in runs),
        "all_acked_stored": all(r["heartbeat"]["stored_equals_acked"] for r in runs),
        "floor_per_s": median([r["floor"]["rate"] for r in runs]),
        "floor_p99_ms": median([r["floor"]["p99_ms"] for r in runs]),
        "ratio_to_floor": median([r["ratio_to_floor"] for r in runs]),
        "server_cpu_ms_per_heartbeat": median(
            [r["heartbeat"]["server_cpu_ms_per_req"] for r in runs]
        ),
        "server_cpu_ms_per_floor_req": median([r["floor"]["server_cpu_ms_per_req"] for r in runs]),
    }
    summary["goal_met"] = (
        summary["heartbeats_per_s"] >= GOAL_RATE
        and summary["p99_ms"] < GOAL_P99_MS
        and summary["errors"] == 0
        and summary["all_acked_stored"]
    )
    print(
        f"median: {summary['heartbeats_per_s']:.0f} heartbeats/s (goal >= {GOAL_RATE}), "
        f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms (goal < {GOAL_P99_MS}), "
        f"errors {summary['errors']}; floor {summary['floor_per_s']:.0f} req/s; "
        f"ratio heartbeat/floor {summary['ratio_to_floor']:.2f}; server CPU per request "
        f"{summary['server_cpu_ms_per_heartbeat']:.2f} ms vs floor "
        f"{summary['server_cpu_ms_per_floor_req']:.2f} ms; goal met: {summary['goal_met']}"
    )
    params = {k: getattr(args, k) for k in ("agents", "workers", "duration", "warmup", "repeat")}
    return finish(args.name, {"params": params, "summary": summary, "runs": runs})


if __name__ == "__main__":
    raise SystemExit(main())
