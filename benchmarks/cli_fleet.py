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

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _common import Api, median, run_cli  # noqa: E402
from p4_fleet_status import fleet_args, fleet_db, fleet_finish  # noqa: E402

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


def run(api: Api, argv: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the CLI process) of one `saveos ARGV`."""
    proc, wall, cpu = run_cli(api, argv, COLUMNS="160")
    if proc.returncode not in (0, 2):  # 2: the dataset has hosts that need attention
        raise SystemExit(f"saveos {' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return wall, cpu


def main() -> int:
    args = fleet_args(__doc__, snapshots=100_000, repeat=3, name="cli_fleet")
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
    return fleet_finish(args, counts, summary, walls=walls, cpus=cpus)


if __name__ == "__main__":
    raise SystemExit(main())
