"""The CLI at fleet scale: each read command's own CPU against 10,000 agents (the P4 dataset).

Goal (issue #19): no command takes more than 1 s of its own CPU at 10k agents. The baseline
beside each figure is the floor any `saveos` command pays before it does anything: the CPU of
`saveos --version` (Python, Typer, the command tree) in the same run.

Each command runs --repeat times as a separate process, the way an operator or cron runs it;
the figure is the median of its user+system CPU (RUSAGE_CHILDREN), plus its wall time.

    python benchmarks/cli_fleet.py [--agents 10000] [--snapshots 100000] [--repeat 3]

The snapshot count barely matters to these commands (they read one row per agent); 100,000
keeps the load short. The database is kept between runs like P4's.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _common import REPO, Api, finish, median  # noqa: E402
from p4_fleet_status import fleet_db  # noqa: E402

GOAL_CPU_S = 1.0
COMMANDS = {
    "floor (--version)": ["--version"],
    "status --json": ["status", "--json"],
    "status (table)": ["status"],
    "status --all (table)": ["status", "--all"],
    "agents list (table)": ["agents", "list"],
    "agents list --json": ["agents", "list", "--json"],
    "agents list --all (table)": ["agents", "list", "--all"],
    "snapshots HOST": ["snapshots", "host-00001"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(api: Api, argv: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the CLI process) of one `saveos ARGV`."""
    env = dict(
        os.environ, SAVEOS_API_URL=api.url, SAVEOS_ADMIN_TOKEN=api.admin_token, COLUMNS="160"
    )
    cpu0 = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "saveos_cli.app", *argv],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 2):  # 2: the dataset has hosts that need attention
        raise SystemExit(f"saveos {' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return wall, _children_cpu() - cpu0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="cli_fleet")
    parser.add_argument("--fresh", action="store_true", help="load into a scratch database")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {k: [] for k in COMMANDS}
    cpus: dict[str, list[float]] = {k: [] for k in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="saveos-cli-") as tmp, fleet_db(args) as (url, counts):
        print(f"data: {counts}", flush=True)
        with Api(url, Path(tmp) / "api") as api:
            run(api, ["status", "--json"])  # warm the API's caches once
            for _ in range(args.repeat):
                for key, argv in COMMANDS.items():
                    wall, cpu = run(api, argv)
                    walls[key].append(wall)
                    cpus[key].append(cpu)
    floor = median(cpus["floor (--version)"])
    summary = {}
    for key in COMMANDS:
        cpu, wall = median(cpus[key]), median(walls[key])
        summary[key] = {"cpu_s": cpu, "wall_s": wall, "cpu_vs_floor": cpu / floor}
        mark = "" if key.startswith("floor") else ("  met" if cpu <= GOAL_CPU_S else "  NOT met")
        print(
            f"{key:28} CPU {cpu * 1000:6.0f} ms ({cpu / floor:4.1f}x floor)  "
            f"wall {wall * 1000:6.0f} ms{mark}"
        )
    worst = max((k for k in COMMANDS if not k.startswith("floor")), key=lambda k: median(cpus[k]))
    summary["goal_met"] = median(cpus[worst]) <= GOAL_CPU_S
    print(
        f"worst: {worst} {median(cpus[worst]) * 1000:.0f} ms of its own CPU; "
        f"goal <= {GOAL_CPU_S:.0f} s: {summary['goal_met']}"
    )
    return finish(
        args.name,
        {"params": vars(args), "data": counts, "summary": summary, "walls": walls, "cpus": cpus},
    )


if __name__ == "__main__":
    raise SystemExit(main())
