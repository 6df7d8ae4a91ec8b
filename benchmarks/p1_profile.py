"""P1's profile: where a `saveos deploy` of N lab hosts spends its time, cold and warm.

For one fresh lab of N hosts (API on PostgreSQL), a cold deploy then --warm warm ones, each
through `saveos deploy` with the saveos_task_times callback (benchmarks/callback_plugins/), and
for each run:
  wall        the deploy's wall time, and `ansible -m ping` on the same hosts for scale
  tasks       per task: its wall time (first host started to last host done) and the hosts'
              median time, slowest first
  controller  CPU of the `saveos deploy` process tree (CLI, ansible-runner, ansible-playbook
              and its forks, ssh clients)
  hosts       CPU spent inside the lab hosts' namespaces (each host's sshd is its PID 1: it
              reaps whatever the deploy ran there), total and per host
  api         CPU of the API process
It prints a table and writes results/<name>.json.

    python benchmarks/p1_profile.py [--hosts 10] [--warm 2] [--net 127.0.34] [--repo-servers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _common import REPO, Api, cpu_seconds, finish, scratch_pg  # noqa: E402
from p1_deploy import (  # noqa: E402
    bench_env,
    build_zipapp,
    check_recap,
    deploy_env,
    small_sources,
    timed,
)

from saveos_lab.lab import Lab  # noqa: E402

CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"


def host_cpu(pid: int) -> float:
    """CPU of a lab host's namespace so far: every live process in it (its sshd is PID 1) and
    what each has reaped (an SSH session kept open by ControlPersist reaps its commands)."""
    return cpu_seconds([pid], reaped=True)


def run_profiled(argv: list[str], env: dict, times_path: Path, sshd: dict, api: Api) -> dict:
    env = dict(env, SAVEOS_TASK_TIMES=str(times_path))
    env["ANSIBLE_CALLBACK_PLUGINS"] = str(CALLBACKS)
    env["ANSIBLE_CALLBACKS_ENABLED"] = "saveos_task_times"
    before_hosts = {name: host_cpu(pid) for name, pid in sshd.items()}
    before_api = cpu_seconds([api.proc.pid])
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{argv} exited {status}:\n{out[-4000:]}")
    hosts = {name: host_cpu(pid) - before_hosts[name] for name, pid in sshd.items()}
    return {
        "wall_s": wall,
        "controller_cpu_s": usage.ru_utime + usage.ru_stime,
        "hosts_cpu_s": sum(hosts.values()),
        "host_cpu_median_s": statistics.median(hosts.values()),
        "api_cpu_s": cpu_seconds([api.proc.pid]) - before_api,
        "tasks": json.loads(times_path.read_text())["tasks"],
        "stdout": out,
    }


def summarise(name: str, run: dict, ping: float) -> dict:
    print(
        f"{name}: wall {run['wall_s']:.2f} s ({run['wall_s'] / ping:.2f}x ping {ping:.2f} s);"
        f" CPU controller {run['controller_cpu_s']:.2f} s, hosts {run['hosts_cpu_s']:.2f} s"
        f" (median {run['host_cpu_median_s']:.2f} s per host), API {run['api_cpu_s']:.2f} s"
    )
    rows = []
    for task in run["tasks"]:
        times = [h["s"] for h in task["hosts"].values()]
        ran = [h for h in task["hosts"].values() if h["status"] != "skipped"]
        rows.append(
            {
                "task": task["name"],
                "wall_s": task["end"] - task["start"],
                "hosts": len(ran),
                "host_median_s": statistics.median(times) if times else 0.0,
                "profile": _median_profile([h["profile"] for h in ran if "profile" in h]),
            }
        )
    print(f"  {'wall':>6} {'host':>6} {'n':>3}  task")
    for row in rows:
        times = f"{row['wall_s']:>5.2f}s {row['host_median_s']:>5.2f}s"
        print(f"  {times} {row['hosts']:>3}  {row['task']}")
        if row["profile"]:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in sorted(row["profile"].items()))
            print(f"          host call (medians): {parts}")
    tasks_s = sum(r["wall_s"] for r in rows)
    print(f"  sum of task walls {tasks_s:.2f} s; outside tasks {run['wall_s'] - tasks_s:.2f} s")
    return {k: v for k, v in run.items() if k not in ("stdout", "tasks")} | {"tasks": rows}


def _median_profile(profiles: list[dict]) -> dict:
    keys = sorted({k for p in profiles for k in p})
    return {k: statistics.median(p.get(k, 0.0) for p in profiles) for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--warm", type=int, default=2, help="warm re-deploys after the cold one")
    parser.add_argument(
        "--net", default=os.environ.get("SAVEOS_TEST_LAB_NET", "127.0.7"), help="lab /24 prefix"
    )
    parser.add_argument(
        "--repo-servers", type=int, default=0,
        help="repository servers in the lab (the hosts back up to the first; deployed first)",
    )  # fmt: skip
    parser.add_argument("--name", default="p1_profile")
    args = parser.parse_args()
    build_zipapp()
    scratch = Path(tempfile.mkdtemp(prefix="saveos-bench-p1p-", dir=Path.home()))
    lab = Lab(scratch / "lab", net=args.net)
    result: dict = {"params": vars(args)}
    try:
        inventory = small_sources(lab.up(args.hosts, repo_servers=args.repo_servers))
        hosts = [h.name for h in lab.hosts()]
        sshd = {h.name: h.sshd_pid for h in lab.hosts()}
        plain = bench_env()
        ping_argv = ["ansible", "all", "-i", str(inventory), "-m", "ping"]
        timed(ping_argv, plain, "ansible ping (warm-up)")
        ping = result["ping_s"] = timed(ping_argv, plain, "ansible ping")[0]
        deploy = [sys.executable, "-m", "saveos_cli.app", "deploy", "--inventory", str(inventory)]
        data_dir = scratch / "data"
        with scratch_pg() as url, Api(url, data_dir) as api:
            env = deploy_env(api, data_dir)
            runs = []
            for i in range(1 + args.warm):
                name = "cold" if i == 0 else f"warm{i}"
                run = run_profiled(deploy, env, scratch / f"{name}.json", sshd, api)
                check_recap(run["stdout"], hosts, warm=i > 0)
                runs.append(summarise(name, run, ping))
            result["runs"] = runs
    finally:
        lab.down()
        shutil.rmtree(scratch, ignore_errors=True)
    return finish(args.name, result)


if __name__ == "__main__":
    raise SystemExit(main())
