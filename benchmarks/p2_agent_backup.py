"""P2 agent backup overhead: `saveos-agent backup` against a raw `borg create` + `borg prune` +
`borg compact` sequence and against borgmatic, on the same seeded dataset and repo settings.

Dataset: ~10,000 files / ~500 MB (half incompressible, half text), seeded, generated once into
/var/tmp/saveos-bench-p2/data and reused. Per repetition and per tool (the order rotates): a
fresh repokey-blake2 repo and borg cache, the initial backup, then 1% of the files rewritten
(same files, same bytes for every tool) and the incremental backup. Same compression (zstd,3),
excludes (*.tmp), retention (daily 7 / weekly 4 / monthly 6) and passphrase delivery for all.

    python benchmarks/p2_agent_backup.py [--repeat 3] [--borgmatic PATH-TO-borgmatic]
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
from _common import REPO, median, write_result  # noqa: E402

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
    """Generation 0 is the base dataset; 1 rewrites the 1% of files with new bytes."""
    sizes = _sizes()
    for i in changed_files():
        _write(i, sizes[i], generation)


def run(argv, env, **kw) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, **kw)
    if proc.returncode not in (0, 1):  # 1: borg warning (e.g. a file changed while read)
        raise RuntimeError(
            f"{argv[0]} {argv[1:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )


class Tool:
    name = ""

    def __init__(self, work: Path, passfile: Path):
        self.work = work
        self.repo = work / "repo"
        self.passfile = passfile
        self.env = dict(os.environ, BORG_BASE_DIR=str(work / "borg-base"), BORG_EXIT_CODES="legacy")
        for key in ("BORG_PASSPHRASE", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD"):
            self.env.pop(key, None)

    def reset(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        init_env = dict(self.env, BORG_PASSCOMMAND=f"cat {self.passfile}")
        run(["borg", "init", "--encryption", "repokey-blake2", str(self.repo)], init_env)

    def backup(self) -> None:
        raise NotImplementedError

    def last_archive(self) -> dict:
        """nfiles and original size of the newest archive: every tool must have saved the same."""
        env = dict(self.env, BORG_PASSCOMMAND=f"cat {self.passfile}")
        out = subprocess.run(
            ["borg", "info", "--json", "--last", "1", str(self.repo)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        stats = json.loads(out)["archives"][0]["stats"]
        return {"nfiles": stats["nfiles"], "original_size": stats["original_size"]}


class RawBorg(Tool):
    name = "raw_borg"

    def backup(self) -> None:
        env = dict(self.env, BORG_PASSCOMMAND=f"cat {self.passfile}")
        archive = (
            f"{self.repo}::bench-{time.strftime('%Y-%m-%dT%H:%M:%S')}.{time.time_ns() % 10**6}"
        )
        excludes = [arg for pattern in EXCLUDES for arg in ("--exclude", pattern)]
        run(["borg", "create", "--compression", COMPRESSION, *excludes, archive, str(DATA)], env)
        keep = [f"--{k.replace('_', '-')}={v}" for k, v in RETENTION.items()]
        run(["borg", "prune", *keep, "--glob-archives", "bench-*", str(self.repo)], env)
        run(["borg", "compact", str(self.repo)], env)


class Agent(Tool):
    name = "saveos_agent"

    def __init__(self, work: Path, passfile: Path, pyz: Path):
        super().__init__(work, passfile)
        self.pyz = pyz

    def reset(self) -> None:
        super().reset()
        config = {
            "repository": str(self.repo),
            "passphrase_file": str(self.passfile),
            "sources": [str(DATA)],
            "excludes": EXCLUDES,
            "retention": RETENTION,
            "compression": COMPRESSION,
            "hostname": "bench",
            "spool_dir": str(self.work / "spool"),
            "state_dir": str(self.work / "state"),
            "log_file": str(self.work / "agent.log"),
        }
        self.config = self.work / "agent.json"
        self.config.write_text(json.dumps(config))
        self.config.chmod(0o600)

    def backup(self) -> None:
        argv = ["/usr/bin/python3", str(self.pyz), "--config", str(self.config), "--json"]
        run(argv + ["backup"], self.env)


class Borgmatic(Tool):
    name = "borgmatic"

    def __init__(self, work: Path, passfile: Path, borgmatic: str):
        super().__init__(work, passfile)
        self.borgmatic = borgmatic

    def reset(self) -> None:
        super().reset()
        lines = [
            "source_directories:",
            f"    - {DATA}",
            "repositories:",
            f"    - path: {self.repo}",
            "exclude_patterns:",
            *[f"    - '{p}'" for p in EXCLUDES],
            f"compression: {COMPRESSION}",
            f"encryption_passcommand: cat {self.passfile}",
            "archive_name_format: 'bench-{now:%Y-%m-%dT%H:%M:%S.%f}'",
            "match_archives: 'sh:bench-*'",
            *[f"{k}: {v}" for k, v in RETENTION.items()],
            # borgmatic otherwise adds its config and a manifest to every archive (2 files)
            "store_config_files: false",
        ]
        self.config = self.work / "borgmatic.yaml"
        self.config.write_text("\n".join(lines) + "\n")
        self.config.chmod(0o600)

    def backup(self) -> None:
        run([self.borgmatic, "--config", str(self.config), "create", "prune", "compact"], self.env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--borgmatic", default="/var/tmp/borgmatic-venv/bin/borgmatic")
    parser.add_argument("--name", default="p2_agent_backup")
    args = parser.parse_args()
    dataset = ensure_dataset()
    ROOT.mkdir(parents=True, exist_ok=True)
    passfile = ROOT / "passphrase"
    if not passfile.exists():
        passfile.write_text(f"bench-{SEED}-not-a-real-secret\n")
    passfile.chmod(0o600)
    pyz = ROOT / "saveos-agent.pyz"
    subprocess.run(
        [sys.executable, str(REPO / "agent" / "build.py"), "--out", str(pyz)],
        check=True,
        capture_output=True,
    )
    borgmatic_version = subprocess.run(
        [args.borgmatic, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tools = [
        RawBorg(ROOT / "run" / "raw", passfile),
        Agent(ROOT / "run" / "agent", passfile, pyz),
        Borgmatic(ROOT / "run" / "borgmatic", passfile, args.borgmatic),
    ]
    times = {t.name: {"initial": [], "incremental": []} for t in tools}
    saved: dict[str, set] = {"initial": set(), "incremental": set()}
    for rep in range(args.repeat):
        order = tools[rep % 3 :] + tools[: rep % 3]  # rotate: nobody always runs first
        for tool in order:
            set_generation(0)
            tool.reset()
            for phase in ("initial", "incremental"):
                if phase == "incremental":
                    set_generation(1)
                start = time.perf_counter()
                tool.backup()
                times[tool.name][phase].append(time.perf_counter() - start)
                saved[phase].add((tool.name, *sorted(tool.last_archive().items())))
            shutil.rmtree(tool.work, ignore_errors=True)
        print(
            f"run {rep + 1}: "
            + "; ".join(
                f"{name} initial {t['initial'][-1]:.1f} s incremental {t['incremental'][-1]:.2f} s"
                for name, t in times.items()
            ),
            flush=True,
        )
    set_generation(0)
    same = all(len({entry[1:] for entry in v}) == 1 for v in saved.values())
    print(
        f"archives identical across tools and runs: {same} "
        f"{ {phase: sorted(v) for phase, v in saved.items()} }"
    )
    med = {name: {phase: median(v) for phase, v in t.items()} for name, t in times.items()}
    summary = {"median_s": med, "same_content_saved": same}
    for phase in ("initial", "incremental"):
        agent = med["saveos_agent"][phase]
        summary[f"{phase}_agent_vs_raw"] = agent / med["raw_borg"][phase]
        summary[f"{phase}_agent_vs_borgmatic"] = agent / med["borgmatic"][phase]
    summary["goal_met"] = same and all(
        summary[f"{p}_agent_vs_raw"] <= GOAL_VS_RAW and summary[f"{p}_agent_vs_borgmatic"] <= 1.0
        for p in ("initial", "incremental")
    )
    for phase in ("initial", "incremental"):
        print(
            f"median {phase}: raw borg {med['raw_borg'][phase]:.2f} s, saveos-agent "
            f"{med['saveos_agent'][phase]:.2f} s ({summary[f'{phase}_agent_vs_raw']:.3f}x raw), "
            f"borgmatic {med['borgmatic'][phase]:.2f} s "
            f"(agent/borgmatic {summary[f'{phase}_agent_vs_borgmatic']:.3f})"
        )
    print(f"goal (<= {GOAL_VS_RAW}x raw borg, <= borgmatic): {summary['goal_met']}")
    path = write_result(
        args.name,
        {
            "params": vars(args),
            "dataset": {**dataset, "changed_files": len(changed_files())},
            "borgmatic_version": borgmatic_version,
            "summary": summary,
            "times": times,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
