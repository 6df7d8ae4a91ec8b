"""The API's CPU per batch of heartbeats and of snapshot reports, by batch size, on PostgreSQL:
where R8's CPU per request goes (at R8's rates a lane's batch holds a request or two, so what a
batch costs is paid per request; P3's batches are hundreds of heartbeats).

In process (the app as `saveos server` makes it, its writer lanes on a TestClient's loop), a
fresh database; per size k, rounds of k requests from k agents submitted at once (two lanes:
each writes about k/2); CPU = the whole process's (event loop, lanes, validation of the bodies).
Reports are bounded as in production; heartbeats are the baseline beside them.

    python benchmarks/report_batch_cpu.py [--sizes 1,2,4,16,64,256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import finish, median, scratch_pg  # noqa: E402
from report_support import snapshot_report  # noqa: E402

from saveos_api.main import create_app  # noqa: E402
from saveos_api.reports import SNAPSHOTS  # noqa: E402
from saveos_api.schemas import HeartbeatIn  # noqa: E402
from saveos_api.settings import Settings  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

AGENTS = 512


def measure(url: str, data: Path, sizes: list[int]) -> dict:
    admin = "adm_" + secrets.token_urlsafe(32)
    # A day's bound each agent stays far below, and room for every round's report.
    settings = Settings(
        data_dir=data, database_url=url, admin_token=admin, report_burst=1000,
        report_rate_per_min=10**6,
    )  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {admin}"}
        tokens = [
            client.post("/api/v1/agents/provision", json={"name": f"b{i}"}, headers=headers).json()[
                "token"
            ]
            for i in range(AGENTS)
        ]
        state = app.state

        async def beats(ts):
            body = HeartbeatIn(agent_version="1.0.0")
            await asyncio.gather(*(state.heartbeats.submit(t, body) for t in ts))

        async def reports(ts):
            await asyncio.gather(
                *(
                    state.reports.submit(t, SNAPSHOTS, SNAPSHOTS.schema(**snapshot_report(**r)))
                    for t, r in zip(ts, _repositories(len(ts)), strict=True)
                )
            )

        out = {}
        for label, submit in (("heartbeat", beats), ("snapshot_report", reports)):
            client.portal.call(submit, tokens)  # every lane connected, tokens' last_used fresh
            out[label] = {}
            for k in sizes:
                rounds = max(4, 256 // k)
                started = time.process_time()
                for r in range(rounds):
                    first = (r * k) % AGENTS
                    client.portal.call(submit, (tokens * 2)[first : first + k])
                out[label][k] = (time.process_time() - started) / rounds / k * 1000
    return out


def _repositories(count: int) -> list[dict]:
    return [{"repository": {"server": "repo1", "path": f"/srv/{i}"}} for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,16,64,256")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="report_batch_cpu")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    for _ in range(args.repeat):
        with scratch_pg() as url, tempfile.TemporaryDirectory() as tmp:
            runs.append(measure(url, Path(tmp), sizes))
    summary = {label: {k: median([r[label][k] for r in runs]) for k in sizes} for label in runs[0]}
    print(f"CPU per request (ms, median of {len(runs)}), by batch size:")
    for k in sizes:
        beat, report = summary["heartbeat"][k], summary["snapshot_report"][k]
        print(
            f"  {k:4d}: heartbeat {beat:.3f}, snapshot report {report:.3f} ({report / beat:.1f}x)"
        )
    return finish(args.name, {"params": vars(args), "summary": summary, "runs": runs})


if __name__ == "__main__":
    raise SystemExit(main())
