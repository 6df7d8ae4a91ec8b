"""P2 agent backup overhead: `saveos-agent backup` against a raw `borg create` + `borg prune` +
`borg compact` sequence and against borgmatic, on the same seeded dataset and repo settings.

Dataset: ~10,000 files / ~500 MB (half incompressible, half text), seeded, generated once into
/var/tmp/saveos-bench-p2/data and reused. Same compression (zstd,3), excludes (*.tmp), retention
(daily 7 / weekly 4 / monthly 6) for all three tools; each has its own repokey-blake2 repo and
borg cache (BORG_BASE_DIR), kept from its initial backup to its incrementals.

Per repetition: every tool gets a fresh repo and backs up the base dataset (initial, the tool
order rotating); then, `--incrementals` times, 1% of the files are rewritten (the same files and
bytes for every tool) and every tool backs up that state (incremental, order rotating again).
The three tools' incrementals of one data state run back to back, so a load spike from other
work on the machine hits all of them alike; each one is timed (wall) and its CPU is measured
(user+system of the whole process tree, from getrusage). After every backup the newest archive
of every tool is compared (file count and size) so that all saved the same thing.

    python benchmarks/p2_agent_backup.py [--repeat 5] [--incrementals 3] [--borgmatic PATH]

borgmatic comes from PyPI in its own venv (created at --borgmatic's venv when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_agent, finish, load_range, median  # noqa: E402
from _tools import Agent, Borgmatic, Tool, ensure_borgmatic, rotated, run, timed  # noqa: E402

ROOT = Path(os.environ.get("SAVEOS_BENCH_P2_DIR", "/var/tmp/saveos-bench-p2"))
DATA = ROOT / "data"
FILES, TOTAL_BYTES, SEED = 10_000, 500 * 1024 * 1024, 20261125
CHANGED_FRACTION = 0.01
COMPRESSION = "zstd,3"
EXCLUDES = ["*.tmp"]
RETENTION = {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6}
GOAL_VS_RAW = 1.05
WORDS = [b"backup", b"borg", b"fleet", b"saveos", b"archive", b"chunk", b"repo", b"host"]


def _content(rng: random.Random, size: int, text: bool) -> bytes:
    if not text:
        return rng.randbytes(size)
    line = b" ".join(rng.choice(WORDS) for _ in range(12)) + b"\n"
    return (line * (size // len(line) + 1))[:size]


def _sizes() -> list[int]:
    rng = random.Random(SEED)
    raw = [rng.lognormvariate(0, 1.2) for _ in range(FILES)]
    scale = TOTAL_BYTES / sum(raw)
    return [max(1, int(r * scale)) for r in raw]


def _path(i: int) -> Path:
    return DATA / f"d{i % 100:02d}" / (f"f{i:05d}.tmp" if i % 200 == 0 else f"f{i:05d}.dat")


def _write(i: int, size: int, generation: int) -> None:
    rng = random.Random(SEED * 1000 + i * 10 + generation)
    _path(i).write_bytes(_content(rng, size, text=i % 2 == 0))


def ensure_dataset() -> dict:
    marker = ROOT / "dataset.json"
    info = {"files": FILES, "bytes": TOTAL_BYTES, "seed": SEED}
    if marker.exists() and json.loads(marker.read_text()) == info:
        return info
    shutil.rmtree(DATA, ignore_errors=True)
    for d in range(100):
        (DATA / f"d{d:02d}").mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(_sizes()):
        _write(i, size, 0)
    marker.write_text(json.dumps(info))
    return info


def changed_files() -> list[int]:
    return sorted(random.Random(SEED + 1).sample(range(FILES), int(FILES * CHANGED_FRACTION)))


def set_generation(generation: int) -> None:
    """Generation 0 is the base dataset; 1..9 rewrite the same 1% of files with new bytes."""
    sizes = _sizes()
    for i in changed_files():
        _write(i, sizes[i], generation)


class RawBorg(Tool):
    name = "raw_borg"

    def backup(self) -> None:
        env = self.borg_env
        archive = (
            f"{self.repo}::bench-{time.strftime('%Y-%m-%dT%H:%M:%S')}.{time.time_ns() % 10**6}"
        )
        excludes = [arg for pattern in EXCLUDES for arg in ("--exclude", pattern)]
        run(["borg", "create", "--compression", COMPRESSION, *excludes, archive, str(DATA)], env)
        keep = [f"--{k.replace('_', '-')}={v}" for k, v in RETENTION.items()]
        run(["borg", "prune", *keep, "--glob-archives", "bench-*", str(self.repo)], env)
        run(["borg", "compact", str(self.repo)], env)


def rounds(tools: list, repeat: int, incrementals: int) -> tuple[dict, dict, dict, list]:
    """Per repetition: fresh repositories, the initial backup, then `incrementals` backups of
    the same rewritten files; every tool back to back, the order rotating. Returns the wall
    and CPU times, the agent/raw ratio of each back-to-back pair, what each saved, the loads."""
    names = [t.name for t in tools]
    times = {
        kind: {name: {"initial": [], "incremental": []} for name in names}
        for kind in ("wall", "cpu")
    }
    pairs: dict[str, list[float]] = {"initial": [], "incremental": []}
    saved: dict[tuple, set] = {}
    loads = []
    step = 0
    for rep in range(repeat):
        set_generation(0)
        for tool in tools:
            tool.reset()
        for generation in range(incrementals + 1):
            phase = "initial" if generation == 0 else "incremental"
            if generation:
                set_generation(generation)
            loads.append(os.getloadavg()[0])
            wall = {}
            for tool in rotated(tools, step):  # nobody always runs first
                wall[tool.name], cpu = timed(tool)
                times["wall"][tool.name][phase].append(wall[tool.name])
                times["cpu"][tool.name][phase].append(cpu)
                key = (rep, generation)
                saved.setdefault(key, set()).add(tuple(sorted(tool.last_archive().items())))
            step += 1
            pairs[phase].append(wall["saveos_agent"] / wall["raw_borg"])
            print(
                f"run {rep + 1} {phase} {generation}: "
                + "; ".join(
                    f"{name} {wall[name]:.2f} s ({times['cpu'][name][phase][-1]:.2f} s CPU)"
                    for name in names
                )
                + f"; load {loads[-1]:.1f}",
                flush=True,
            )
        for tool in tools:
            shutil.rmtree(tool.work, ignore_errors=True)
    set_generation(0)
    return times, pairs, saved, loads


def paired_result(args, dataset, loads, summary, times, pairs, **versions) -> dict:
    """The result file of a run of rounds() (P2, P5): `versions` of the tools beside."""
    return {
        "params": vars(args),
        "dataset": {**dataset, "changed_files": len(changed_files())},
        **versions,
        "load_1min": load_range(loads),
        "summary": summary,
        "times": times,
        "agent_vs_raw_pairs": pairs,
    }


def summarize(times: dict, pairs: dict, same: bool) -> dict:
    med = {name: {phase: median(v) for phase, v in t.items()} for name, t in times["wall"].items()}
    cpu = {name: {phase: median(v) for phase, v in t.items()} for name, t in times["cpu"].items()}
    summary = {"median_s": med, "median_cpu_s": cpu, "same_content_saved": same}
    for phase in ("initial", "incremental"):
        agent = med["saveos_agent"][phase]
        summary[f"{phase}_agent_vs_raw"] = agent / med["raw_borg"][phase]
        summary[f"{phase}_agent_vs_borgmatic"] = agent / med["borgmatic"][phase]
        summary[f"{phase}_agent_vs_raw_paired_median"] = median(pairs[phase])
        summary[f"{phase}_agent_vs_raw_cpu"] = cpu["saveos_agent"][phase] / cpu["raw_borg"][phase]
        summary[f"{phase}_agent_vs_borgmatic_cpu"] = (
            cpu["saveos_agent"][phase] / cpu["borgmatic"][phase]
        )
    summary["goal_met"] = same and all(
        summary[f"{p}_agent_vs_raw"] <= GOAL_VS_RAW and summary[f"{p}_agent_vs_borgmatic"] <= 1.0
        for p in ("initial", "incremental")
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--incrementals", type=int, default=3, choices=range(1, 10))
    parser.add_argument("--borgmatic", default="/var/tmp/borgmatic-venv/bin/borgmatic")
    parser.add_argument("--name", default="p2_agent_backup")
    args = parser.parse_args()
    dataset = ensure_dataset()
    ROOT.mkdir(parents=True, exist_ok=True)
    passfile = ROOT / "passphrase"
    if not passfile.exists():
        passfile.write_text(f"bench-{SEED}-not-a-real-secret\n")
    passfile.chmod(0o600)
    pyz = build_agent(ROOT / "saveos-agent.pyz")
    borgmatic = ensure_borgmatic(args.borgmatic)
    borgmatic_version = subprocess.run(
        [borgmatic, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    borg_version = subprocess.run(
        ["borg", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    agent_settings = {
        "sources": [str(DATA)],
        "excludes": EXCLUDES,
        "retention": RETENTION,
        "compression": COMPRESSION,
    }
    borgmatic_extra = [
        "exclude_patterns:",
        *[f"    - '{p}'" for p in EXCLUDES],
        "match_archives: 'sh:bench-*'",
        *[f"{k}: {v}" for k, v in RETENTION.items()],
    ]
    tools = [
        RawBorg(ROOT / "run" / "raw", passfile),
        Agent(ROOT / "run" / "agent", passfile, pyz, agent_settings),
        Borgmatic(ROOT / "run" / "borgmatic", passfile, borgmatic, source=DATA,
                  compression=COMPRESSION, extra=borgmatic_extra),
    ]  # fmt: skip
    names = [t.name for t in tools]
    times, pairs, saved, loads = rounds(tools, args.repeat, args.incrementals)
    set_generation(0)
    same = all(len(v) == 1 for v in saved.values())
    print(
        f"archives identical across tools: {same} {sorted({e for v in saved.values() for e in v})}"
    )
    summary = summarize(times, pairs, same)
    med, cpu = summary["median_s"], summary["median_cpu_s"]
    for phase in ("initial", "incremental"):
        per_tool = ", ".join(
            f"{name} {med[name][phase]:.2f} s ({cpu[name][phase]:.2f} s CPU)" for name in names
        )
        print(
            f"median {phase}: {per_tool}; agent/raw {summary[f'{phase}_agent_vs_raw']:.3f} "
            f"(paired {summary[f'{phase}_agent_vs_raw_paired_median']:.3f}, "
            f"CPU {summary[f'{phase}_agent_vs_raw_cpu']:.3f}), agent/borgmatic "
            f"{summary[f'{phase}_agent_vs_borgmatic']:.3f}"
        )
    print(f"goal (<= {GOAL_VS_RAW}x raw borg, <= borgmatic): {summary['goal_met']}")
    return finish(
        args.name,
        paired_result(
            args, dataset, loads, summary, times, pairs,
            borg_version=borg_version, borgmatic_version=borgmatic_version,
        ),
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
