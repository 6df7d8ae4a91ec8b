"""P7 database dump into Borg: `saveos-agent backup` with a 1 GB PostgreSQL database declared
(its dump streamed through a FIFO into the backup's own `borg create`), against the
hand-written `pg_dump | borg create --stdin-name NAME REPO::A -` and against borgmatic's
PostgreSQL hook, in the same run.

Database: `saveos_t22_p7` on the machine's PostgreSQL (127.0.0.1:5432), created once (about
1 GB: seeded rows of hex text) and kept between runs. Every tool dumps it in the custom format
(`pg_dump -Fc`), with the same compression (lz4) into its own fresh repokey-blake2 repository
per repetition: an initial backup, then an incremental one (the same database: the dump
deduplicates). SaveOS and borgmatic also archive one small source directory and run their
prune and compact, as they do in production; the hand-written pipe does nothing else, and its
repository then gets the same prune and compact, timed apart (`hand_pipe+prune+compact` is the
pipe plus those: the like-for-like baseline). Tools run
back to back in rotating order; wall and CPU (user+system of the whole process tree, from
getrusage) are recorded; after every backup the dump's size in the archive is compared.

    python benchmarks/p7_database_dump.py [--repeat 3] [--borgmatic PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_agent, finish, load_range, median  # noqa: E402
from _tools import Agent, Borgmatic, Tool, ensure_borgmatic, rotated, run, timed  # noqa: E402

ROOT = Path(os.environ.get("SAVEOS_BENCH_P7_DIR", "/var/tmp/saveos-bench-p7-dumps"))
DB = "saveos_t22_p7"
ROWS, SEED = 4_500_000, 20261201
COMPRESSION = "lz4"
GOAL_VS_PIPE = 1.05
MAINT = "hand_pipe+prune+compact"
PSQL = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"]


def psql(sql: str, db: str = "postgres") -> str:
    out = subprocess.run([*PSQL, "-d", db], input=sql, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


def ensure_database() -> dict:
    """The 1 GB database, built once; its marker table says with which parameters."""
    info = {"rows": ROWS, "seed": SEED}
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB}'") == "1":
        with_marker = psql("SELECT to_regclass('p7_info') IS NOT NULL", DB)
        if with_marker == "t" and psql("SELECT params FROM p7_info", DB) == json.dumps(info):
            return {**info, "bytes": int(psql(f"SELECT pg_database_size('{DB}')"))}
        psql(f'DROP DATABASE "{DB}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{DB}"')
    # seeded hex text: compresses about 2x, like real rows of ids and hashes
    psql(
        f"SELECT setseed({SEED % 1000} / 1000.0);"
        "CREATE TABLE items AS SELECT g AS id, now()::date - (g % 3650) AS day,"
        " md5(g::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)"
        "   || md5(random()::text) || md5(random()::text) AS body"
        f" FROM generate_series(1, {ROWS}) g;"
        "ALTER TABLE items ADD PRIMARY KEY (id);"
        f"CREATE TABLE p7_info AS SELECT '{json.dumps(info)}'::text AS params;",
        DB,
    )
    return {**info, "bytes": int(psql(f"SELECT pg_database_size('{DB}')"))}


def small_source(work: Path, write: bool = False) -> Path:
    """The one small source directory SaveOS and borgmatic archive beside the dump (`write`:
    its file, after every reset)."""
    if write:
        (work / "files").mkdir()
        (work / "files" / "app.conf").write_text("key = value\n")
    return work / "files"


def dump_size(tool: Tool) -> int:
    """Size of the newest archive's dump (the one file over 1 MB)."""
    last = subprocess.run(
        ["borg", "list", "--short", "--last", "1", str(tool.repo)],
        env=tool.borg_env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    listing = subprocess.run(
        ["borg", "list", "--format", "{size}{NL}", f"{tool.repo}::{last}"],
        env=tool.borg_env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return max(int(s) for s in listing)


class HandPipe(Tool):
    name = "hand_pipe"

    def backup(self) -> None:
        script = (
            f"set -o pipefail; pg_dump -Fc -h 127.0.0.1 -U postgres {DB} | borg create "
            f"--compression {COMPRESSION} --stdin-name postgresql-{DB}.pgdump "
            f'"{self.repo}::pipe-$(date +%Y-%m-%dT%H:%M:%S.%N)" -'
        )
        run(["bash", "-c", script], self.borg_env)

    def maintain(self) -> None:
        """What SaveOS and borgmatic do after every create and the bare pipe does not: prune
        (the same keep_daily 7) and compact. Timed apart: the pipe alone and pipe + this."""
        run(["borg", "prune", "--keep-daily", "7", str(self.repo)], self.borg_env)
        run(["borg", "compact", str(self.repo)], self.borg_env)


class _Maintenance:
    """timed() runs backup(): here the hand pipe's maintenance."""

    def __init__(self, pipe: HandPipe):
        self.backup = pipe.maintain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--borgmatic", default="/var/tmp/borgmatic-venv/bin/borgmatic")
    parser.add_argument("--name", default="p7_database_dump")
    args = parser.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    database = ensure_database()
    print(f"database {DB}: {database['bytes'] / 1e9:.2f} GB", flush=True)
    passfile = ROOT / "passphrase"
    passfile.write_text(f"bench-{SEED}-not-a-real-secret\n")
    passfile.chmod(0o600)
    pyz = build_agent(ROOT / "saveos-agent.pyz")
    borgmatic = ensure_borgmatic(args.borgmatic)
    versions = {
        tool: subprocess.run([cmd, "--version"], capture_output=True, text=True).stdout.strip()
        for tool, cmd in (("borg", "borg"), ("borgmatic", borgmatic), ("pg_dump", "pg_dump"))
    }
    run_dir = ROOT / "run"
    agent_settings = {
        "sources": [str(small_source(run_dir / "agent"))],
        "retention": {"keep_daily": 7},
        "compression": COMPRESSION,
        "dump_dir": str(run_dir / "agent" / "dumps"),
        "databases": [{"type": "postgresql", "name": DB, "host": "127.0.0.1", "user": "postgres"}],
    }
    borgmatic_extra = [
        "keep_daily: 7",
        f"user_runtime_directory: {run_dir / 'borgmatic' / 'runtime'}",
        "postgresql_databases:",
        f"    - name: {DB}",
        "      hostname: 127.0.0.1",
        "      username: postgres",
        "      format: custom",
    ]
    tools = [
        HandPipe(run_dir / "pipe", passfile),
        Agent(run_dir / "agent", passfile, pyz, agent_settings),
        Borgmatic(run_dir / "borgmatic", passfile, borgmatic,
                  source=small_source(run_dir / "borgmatic"), compression=COMPRESSION,
                  extra=borgmatic_extra),
    ]  # fmt: skip
    phases = ("initial", "incremental")
    names = [t.name for t in tools] + [MAINT]
    times = {k: {n: {p: [] for p in phases} for n in names} for k in ("wall", "cpu")}
    sizes: dict[str, list[int]] = {t.name: [] for t in tools}
    loads, loadavgs, step = [], [], 0
    for rep in range(args.repeat):
        for tool in tools:
            tool.reset()
            small_source(tool.work, write=True)
        for phase in phases:
            loads.append(os.getloadavg()[0])
            loadavgs.append(Path("/proc/loadavg").read_text().strip())
            line = []
            for tool in rotated(tools, step):
                wall, cpu = timed(tool)
                times["wall"][tool.name][phase].append(wall)
                times["cpu"][tool.name][phase].append(cpu)
                sizes[tool.name].append(dump_size(tool))
                line.append(f"{tool.name} {wall:.2f} s ({cpu:.2f} s CPU)")
                if isinstance(tool, HandPipe):
                    m_wall, m_cpu = timed(_Maintenance(tool))
                    times["wall"][MAINT][phase].append(wall + m_wall)
                    times["cpu"][MAINT][phase].append(cpu + m_cpu)
                    line.append(f"(+ prune/compact {m_wall:.2f} s, {m_cpu:.2f} s CPU)")
            step += 1
            print(f"run {rep + 1} {phase}: " + "; ".join(line) + f"; loadavg {loadavgs[-1]}",
                  flush=True)  # fmt: skip
        for tool in tools:
            shutil.rmtree(tool.work, ignore_errors=True)
    all_sizes = [s for v in sizes.values() for s in v]
    same = max(all_sizes) - min(all_sizes) <= max(all_sizes) * 0.001
    med = {t: {p: median(v) for p, v in by.items()} for t, by in times["wall"].items()}
    cpu = {t: {p: median(v) for p, v in by.items()} for t, by in times["cpu"].items()}
    summary: dict = {"median_s": med, "median_cpu_s": cpu, "same_dump_size": same}
    for p in phases:
        summary[f"{p}_agent_vs_pipe"] = med["saveos_agent"][p] / med["hand_pipe"][p]
        summary[f"{p}_agent_vs_borgmatic"] = med["saveos_agent"][p] / med["borgmatic"][p]
        summary[f"{p}_agent_vs_pipe_cpu"] = cpu["saveos_agent"][p] / cpu["hand_pipe"][p]
        summary[f"{p}_agent_vs_pipe_maint_cpu"] = cpu["saveos_agent"][p] / cpu[MAINT][p]
        summary[f"{p}_agent_vs_borgmatic_cpu"] = cpu["saveos_agent"][p] / cpu["borgmatic"][p]
        print(
            f"median {p}: "
            + ", ".join(f"{t} {med[t][p]:.2f} s ({cpu[t][p]:.2f} s CPU)" for t in med)
            + f"; agent/pipe {summary[f'{p}_agent_vs_pipe']:.3f} "
            f"(CPU {summary[f'{p}_agent_vs_pipe_cpu']:.3f}; vs pipe + prune/compact "
            f"{summary[f'{p}_agent_vs_pipe_maint_cpu']:.3f}), agent/borgmatic "
            f"{summary[f'{p}_agent_vs_borgmatic']:.3f} "
            f"(CPU {summary[f'{p}_agent_vs_borgmatic_cpu']:.3f})"
        )
    # On a shared machine wall time follows the load, not the tool: CPU decides, as journalled.
    summary["goal_met_cpu"] = same and all(
        summary[f"{p}_agent_vs_pipe_cpu"] <= GOAL_VS_PIPE
        and summary[f"{p}_agent_vs_borgmatic_cpu"] <= 1
        for p in phases
    )
    summary["goal_met"] = same and all(
        summary[f"{p}_agent_vs_pipe"] <= GOAL_VS_PIPE and summary[f"{p}_agent_vs_borgmatic"] <= 1
        for p in phases
    )
    print(f"dump sizes equal across tools: {same} ({min(all_sizes)}..{max(all_sizes)} bytes)")
    print(
        f"goal (<= {GOAL_VS_PIPE}x the hand-written pipe, <= borgmatic): wall "
        f"{summary['goal_met']}, CPU {summary['goal_met_cpu']}"
    )
    return finish(
        args.name,
        {
            "params": vars(args),
            "database": database,
            "versions": versions,
            "load_1min": load_range(loads),
            "loadavg": loadavgs,
            "summary": summary,
            "times": times,
            "dump_sizes": sizes,
        },
    )


if __name__ == "__main__":
    raise SystemExit(main())
