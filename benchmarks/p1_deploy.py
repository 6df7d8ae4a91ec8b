"""P1 fleet deploy: `saveos deploy` to a lab of N real SSH hosts, API on PostgreSQL.

For each fleet size N (a fresh lab, a fresh database and API each time), timed in the same run:
  ping       `ansible all -m ping` on the same inventory and ansible.cfg (the floor: one module
             round trip per host). Run once to open the SSH connections, then timed.
  cold       `saveos deploy --inventory` on hosts that have never seen SaveOS (once per N).
  warm       `saveos deploy --inventory` again; every host must report changed=0 (parsed from
             the CLI's recap table, the run fails otherwise).
ping and warm are interleaved --repeat times and the medians are quoted with warm/ping.
The agent zipapp is built before the first timing so no deploy pays for it.

    python benchmarks/p1_deploy.py [--hosts 1,5,10] [--repeat 3] [--net 127.0.7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _common import REPO, Api, median, scratch_pg, write_result  # noqa: E402

from saveos_lab.lab import Lab  # noqa: E402

GOAL_WARM_10_S = 20.0
BIN = str(Path(sys.executable).parent)
RECAP_COLUMNS = ("host", "ok", "changed", "failed", "unreachable", "skipped", "ignored")


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"
    )
    env["COLUMNS"] = "200"  # the CLI's recap table must not wrap
    env.update(extra or {})
    return env


def timed(argv: list[str], env: dict[str, str], what: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        )
    return elapsed, result.stdout


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    """The rows of `saveos deploy`'s recap table (Rich box drawing, one row per host)."""
    rows: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in stdout.splitlines():
        if line.strip() == "recap":
            in_recap = True
            continue
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if in_recap and len(cells) == len(RECAP_COLUMNS) and all(c.isdigit() for c in cells[1:]):
            rows[cells[0]] = dict(zip(RECAP_COLUMNS[1:], map(int, cells[1:]), strict=True))
    return rows


def check_recap(stdout: str, hosts: list[str], warm: bool) -> dict[str, dict[str, int]]:
    rows = parse_recap(stdout)
    if sorted(rows) != sorted(hosts):
        raise RuntimeError(f"recap lists {sorted(rows)}, expected {hosts}:\n{stdout[-4000:]}")
    for host, row in rows.items():
        if row["failed"] or row["unreachable"]:
            raise RuntimeError(f"{host} failed or unreachable: {row}\n{stdout[-4000:]}")
        if warm and row["changed"]:
            raise RuntimeError(f"warm re-deploy changed {host}: {row}\n{stdout[-4000:]}")
        if not warm and not row["changed"]:
            raise RuntimeError(f"cold deploy changed nothing on {host}: {row}")
    return rows


def run_size(count: int, repeat: int, net: str, scratch: Path) -> dict:
    lab = Lab(scratch / f"lab-{count}", net=net)
    data_dir = scratch / f"data-{count}"
    with scratch_pg() as url, Api(url, data_dir) as api:
        try:
            inventory = lab.up(count)
            hosts = [h.name for h in lab.hosts()]
            ping_argv = ["ansible", "all", "-i", str(inventory), "-m", "ping"]
            deploy_argv = [sys.executable, "-m", "saveos_cli.app", "deploy"]
            deploy_argv += ["--inventory", str(inventory)]
            plain = ansible_env()
            saveos = ansible_env(
                {
                    "SAVEOS_API_URL": api.url,
                    "SAVEOS_ADMIN_TOKEN": api.admin_token,
                    "SAVEOS_ESCROW_DIR": str(data_dir / "escrow"),
                    "SAVEOS_DATA_DIR": str(data_dir),
                }
            )
            timed(ping_argv, plain, "ansible ping (warm-up)")
            ping_first, _ = timed(ping_argv, plain, "ansible ping")
            cold, out = timed(deploy_argv, saveos, "cold deploy")
            cold_rows = check_recap(out, hosts, warm=False)
            print(
                f"  N={count}: ping {ping_first:.2f} s, cold deploy {cold:.2f} s "
                f"(changed {sum(r['changed'] for r in cold_rows.values())})",
                flush=True,
            )
            pings, warms = [ping_first], []
            for rep in range(1, repeat + 1):
                warm, out = timed(deploy_argv, saveos, "warm re-deploy")
                rows = check_recap(out, hosts, warm=True)
                warms.append(warm)
                if rep > 1:
                    pings.append(timed(ping_argv, plain, "ansible ping")[0])
                print(
                    f"  N={count} run {rep}: warm re-deploy {warm:.2f} s (changed=0 on "
                    f"{len(rows)} hosts, ok={rows[hosts[0]]['ok']}/host), ping {pings[-1]:.2f} s",
                    flush=True,
                )
        finally:
            lab.down()
            shutil.rmtree(lab.dir, ignore_errors=True)
    ping_s, warm_s = median(pings), median(warms)
    return {
        "hosts": count,
        "ping_s": pings,
        "cold_s": cold,
        "warm_s": warms,
        "median": {"ping_s": ping_s, "cold_s": cold, "warm_s": warm_s},
        "warm_over_ping": warm_s / ping_s,
        "cold_over_ping": cold / ping_s,
        "tasks_ok_per_host_warm": rows[hosts[0]]["ok"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,5,10", help="comma-separated fleet sizes")
    parser.add_argument("--repeat", type=int, default=3, help="warm re-deploys (and pings) per N")
    parser.add_argument(
        "--net", default=os.environ.get("SAVEOS_TEST_LAB_NET", "127.0.7"), help="lab /24 prefix"
    )
    parser.add_argument("--name", default="p1_deploy")
    args = parser.parse_args()
    sizes = [int(n) for n in args.hosts.split(",") if n.strip()]

    # Build the agent zipapp now, as the role would on its first run, so no timing includes it.
    artifact = REPO / "dist" / "saveos-agent.pyz"
    subprocess.run(
        [sys.executable, str(REPO / "agent" / "build.py"), "--out", str(artifact)],
        cwd=REPO, check=True,
    )  # fmt: skip

    # Under root's home: lab hosts see /root empty, unlike the shared /tmp (escrowed secrets).
    scratch = Path(tempfile.mkdtemp(prefix="saveos-bench-p1-", dir=Path.home()))
    results = []
    try:
        for count in sizes:
            print(f"N={count}: lab up, fresh database, API", flush=True)
            results.append(run_size(count, args.repeat, args.net, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(f"{'hosts':>5} {'ping':>8} {'cold':>8} {'warm':>8} {'warm/ping':>9} {'cold/ping':>9}")
    for r in results:
        m = r["median"]
        print(
            f"{r['hosts']:>5} {m['ping_s']:>7.2f}s {m['cold_s']:>7.2f}s {m['warm_s']:>7.2f}s "
            f"{r['warm_over_ping']:>8.2f}x {r['cold_over_ping']:>8.2f}x"
        )
    ten = next((r for r in results if r["hosts"] == 10), None)
    verdict = None
    if ten:
        verdict = ten["median"]["warm_s"] < GOAL_WARM_10_S
        print(
            f"goal: warm re-deploy of 10 hosts < {GOAL_WARM_10_S:.0f} s: "
            f"{'met' if verdict else 'NOT met'} ({ten['median']['warm_s']:.2f} s)"
        )
    params = {"hosts": sizes, "repeat": args.repeat, "net": args.net}
    path = write_result(args.name, {"params": params, "goal_met": verdict, "sizes": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
