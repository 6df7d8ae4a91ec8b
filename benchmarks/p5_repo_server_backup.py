"""P5 backup to a repository server: `saveos-agent backup` to a SaveOS repository server against
raw `borg create` over the same SSH to the same server, on the P2 dataset, in the same run.

A lab repository server (repo1, `saveos lab up --repo-servers 1`) is set up by the
saveos_repo_server role; the benchmark registers two append-only client keys on it with the
server's own helper (saveos-repo-keys), one repository each, with the same borg serve forced
command the role gives a host. Both tools run on the controller over the same SSH command
(the agent's BORG_RSH: one key, the pinned host key, BatchMode, timeouts), with the same
compression and excludes. Neither prunes nor compacts: with a server repository the agent
does not (retention is central), and neither does the baseline.

Per repetition both repositories are purged and created again; both tools back up the base
dataset (initial, order rotating), then `--incrementals` times 1% of the files are rewritten
(the same bytes for both) and both back up that state back to back. Wall time, CPU of the
whole process tree (the local ssh included) and the paired ratio of each back-to-back pair.

    python benchmarks/p5_repo_server_backup.py [--repeat 3] [--incrementals 3] [--net 127.0.14]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    agent_argv,
    build_agent,
    finish,
    median,
    write_agent_config,
)
from _tools import run  # noqa: E402
from p2_agent_backup import (  # noqa: E402
    COMPRESSION,
    DATA,
    EXCLUDES,
    ensure_dataset,
    paired_result,
    rounds,
)

sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))
from ansible_support import playbook  # noqa: E402

from saveos_lab.lab import Lab  # noqa: E402

ROOT = Path(os.environ.get("SAVEOS_BENCH_P5_DIR", "/var/tmp/saveos-bench-p5"))
GOAL_VS_RAW = 1.05
HELPER = "/usr/local/sbin/saveos-repo-keys"


class Client:
    """One client of the server: its own key, repository and borg cache (BORG_BASE_DIR)."""

    name = ""

    def __init__(self, lab: Lab, passfile: Path):
        self.lab = lab
        self.passfile = passfile
        self.work = ROOT / "run" / self.name
        self.key = ROOT / f"id_{self.name}"
        self.known_hosts = ROOT / "known_hosts"
        server = next(h for h in lab.hosts() if h.name == "repo1")
        self.repo = f"ssh://saveos-repo@{server.address}:{server.port}/srv/saveos-repos/{self.name}"
        self.rsh = (
            f"ssh -i {self.key} -o IdentitiesOnly=yes -o UserKnownHostsFile={self.known_hosts}"
            " -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes"
            " -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        self.env.update(BORG_BASE_DIR=str(self.work / "borg-base"), BORG_EXIT_CODES="legacy")

    def register(self) -> None:
        """A fresh, empty repository and this client's append-only key line on the server."""
        if not self.key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
            )
        public = self.key.with_suffix(".pub").read_text().strip()
        commands = (f"{HELPER} purge {self.name}", f"{HELPER} client {self.name} --key '{public}'")
        for command in commands:
            done = self.lab.ssh("repo1", command)
            if done.returncode != 0:
                raise RuntimeError(f"repo1: {command}: {done.stdout}{done.stderr}")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)

    def borg(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(self.env, BORG_RSH=self.rsh, BORG_PASSCOMMAND=f"cat {self.passfile}")
        return subprocess.run(["borg", *args], env=env, capture_output=True, text=True, check=True)

    def last_archive(self) -> dict:
        stats = json.loads(self.borg("info", "--json", "--last", "1", self.repo).stdout)
        stats = stats["archives"][0]["stats"]
        return {"nfiles": stats["nfiles"], "original_size": stats["original_size"]}


class RawBorg(Client):
    name = "raw_borg"

    def reset(self) -> None:
        self.register()
        self.borg("init", "--encryption", "repokey-blake2", self.repo)

    def backup(self) -> None:
        env = dict(self.env, BORG_RSH=self.rsh, BORG_PASSCOMMAND=f"cat {self.passfile}")
        stamp = f"{time.strftime('%Y-%m-%dT%H:%M:%S')}.{time.time_ns() % 10**6}"
        archive = f"{self.repo}::bench-{stamp}"
        excludes = [arg for pattern in EXCLUDES for arg in ("--exclude", pattern)]
        run(["borg", "create", "--compression", COMPRESSION, *excludes, archive, str(DATA)], env)


class Agent(Client):
    name = "saveos_agent"

    def __init__(self, lab: Lab, passfile: Path, pyz: Path):
        super().__init__(lab, passfile)
        self.pyz = pyz

    def reset(self) -> None:
        self.register()
        settings = {
            "repository": self.repo,
            "repository_server": "repo1",
            "rsh": self.rsh,
            "passphrase_file": str(self.passfile),
            "sources": [str(DATA)],
            "excludes": EXCLUDES,
            "compression": COMPRESSION,
        }
        self.config = write_agent_config(self.work, settings)
        run(agent_argv(self.pyz, self.config, "init"), self.env)

    def backup(self) -> None:
        run(agent_argv(self.pyz, self.config, "backup"), self.env)


def repo_server(net: str, port: int, lab_dir: Path) -> Lab:
    """repo1 in a lab of its own, set up by the saveos_repo_server role (deploy.yml's 1st play)."""
    lab = Lab(lab_dir, net=net, port=port)
    inventory = lab.up(1, repo_servers=1)
    done = playbook(inventory, "playbooks/deploy.yml", "--limit", "repo1", cwd=REPO, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"deploying repo1 failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    key = lab.ssh("repo1", "cat /run/saveos-lab/ssh_host_ed25519_key.pub").stdout.split()[:2]
    server = next(h for h in lab.hosts() if h.name == "repo1")
    (ROOT / "known_hosts").write_text(f"[{server.address}]:{server.port} {' '.join(key)}\n")
    return lab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--incrementals", type=int, default=3, choices=range(1, 10))
    parser.add_argument("--net", default=os.environ.get("SAVEOS_TEST_LAB_NET", "127.0.0"))
    parser.add_argument("--port", type=int, default=22922)
    parser.add_argument("--name", default="p5_repo_server_backup")
    args = parser.parse_args()
    dataset = ensure_dataset()
    ROOT.mkdir(parents=True, exist_ok=True)
    passfile = ROOT / "passphrase"
    passfile.write_text("bench-p5-not-a-real-secret\n")
    passfile.chmod(0o600)
    pyz = build_agent(ROOT / "saveos-agent.pyz")
    lab = repo_server(args.net, args.port, Path(tempfile.mkdtemp(prefix="saveos-bench-p5-lab-")))
    try:
        tools = [RawBorg(lab, passfile), Agent(lab, passfile, pyz)]
        times, pairs, saved, loads = rounds(tools, args.repeat, args.incrementals)
    finally:
        lab.down()
    same = all(len(v) == 1 for v in saved.values())
    med = {n: {p: median(v) for p, v in t.items()} for n, t in times["wall"].items()}
    cpu = {n: {p: median(v) for p, v in t.items()} for n, t in times["cpu"].items()}
    summary = {"median_s": med, "median_cpu_s": cpu, "same_content_saved": same}
    for phase in ("initial", "incremental"):
        summary[f"{phase}_agent_vs_raw"] = med["saveos_agent"][phase] / med["raw_borg"][phase]
        summary[f"{phase}_agent_vs_raw_paired_median"] = median(pairs[phase])
        summary[f"{phase}_agent_vs_raw_cpu"] = cpu["saveos_agent"][phase] / cpu["raw_borg"][phase]
        print(
            f"median {phase}: raw borg {med['raw_borg'][phase]:.2f} s "
            f"({cpu['raw_borg'][phase]:.2f} s CPU), agent {med['saveos_agent'][phase]:.2f} s "
            f"({cpu['saveos_agent'][phase]:.2f} s CPU): agent/raw "
            f"{summary[f'{phase}_agent_vs_raw']:.3f} (paired "
            f"{summary[f'{phase}_agent_vs_raw_paired_median']:.3f}, CPU "
            f"{summary[f'{phase}_agent_vs_raw_cpu']:.3f})"
        )
    summary["goal_met"] = same and all(
        summary[f"{p}_agent_vs_raw"] <= GOAL_VS_RAW for p in ("initial", "incremental")
    )
    print(f"archives identical across tools: {same}; goal (<= {GOAL_VS_RAW}x raw borg over the "
          f"same SSH): {summary['goal_met']}")  # fmt: skip
    borg_version = subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout
    return finish(
        args.name,
        paired_result(
            args, dataset, loads, summary, times, pairs, borg_version=borg_version.strip()
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
