"""P1 fleet deploy: `saveos deploy` to a lab of N real SSH hosts, API on PostgreSQL.

For each fleet size N (a fresh lab, a fresh database and API each time), timed in the same run:
  ping       `ansible all -m ping` on the same inventory and ansible.cfg (the floor: one module
             round trip per host). Run once to open the SSH connections, then timed.
  cold       `saveos deploy --inventory` on hosts that have never seen SaveOS (--cold-repeat
             times: between two, the hosts are wiped and the API's database and the escrow
             store are new, so each one is a first deploy).
  warm       `saveos deploy --inventory` again; every host must report changed=0 (parsed from
             the CLI's recap table, the run fails otherwise).
  backup     `saveos backup --inventory` of the whole lab, against its floor: `ansible all -m
             command -a 'saveos-agent backup'` on the same hosts (the same agent command, no
             playbook, no report collection). Interleaved, floor first. Each host backs up two
             small files (`saveos_agent_sources` in the inventory), so the ratio is the
             orchestration's cost.
ping and warm are interleaved --repeat times and the medians are quoted with warm/ping and
cold/ping; /proc/loadavg is recorded beside every figure (a shared, loaded machine).
The agent zipapp is built before the first timing so no deploy pays for it.

    python benchmarks/p1_deploy.py [--hosts 1,10,20,50,100] [--repeat 3] [--cold-repeat 1]
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

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _common import REPO, Api, finish, median, scratch_pg  # noqa: E402

sys.path.insert(2, str(Path(__file__).resolve().parent.parent / "tests"))
from ansible_support import ansible_env, run  # noqa: E402

from saveos_lab.lab import Lab  # noqa: E402

GOAL_COLD_OVER_PING_10 = 6.0
GOAL_COLD_OVER_PING_100 = 10.0
GOAL_WARM_OVER_PING = 3.5
GOAL_BACKUP_OVER_FLOOR = 1.2
WIPE = (
    "/opt/saveos/supervise stop >/dev/null 2>&1; "
    "rm -rf /etc/saveos /opt/saveos /var/lib/saveos /var/log/saveos /usr/local/bin/saveos-agent"
)
RECAP_COLUMNS = ("host", "ok", "changed", "failed", "unreachable", "skipped", "ignored")


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # COLUMNS: the CLI's recap table must not wrap
    return ansible_env(
        {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "COLUMNS": "200", **(extra or {})}
    )


def build_zipapp() -> None:
    """The agent zipapp, built now as the role would on its first run: no timing includes it."""
    artifact = REPO / "dist" / "saveos-agent.pyz"
    subprocess.run(
        [sys.executable, str(REPO / "agent" / "build.py"), "--out", str(artifact)],
        cwd=REPO, check=True,
    )  # fmt: skip


def deploy_env(api: Api, data_dir: Path) -> dict[str, str]:
    """`saveos deploy`'s environment: this API, a scratch escrow store."""
    return bench_env(
        {
            "SAVEOS_API_URL": api.url,
            "SAVEOS_ADMIN_TOKEN": api.admin_token,
            "SAVEOS_ESCROW_DIR": str(data_dir / "escrow"),
            "SAVEOS_DATA_DIR": str(data_dir),
        }
    )


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed(argv: list[str], env: dict[str, str], what: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = run(argv, cwd=REPO, env=env, timeout=1800)
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


def small_sources(inventory: Path) -> Path:
    """Back up two small files per host (not the role's default /etc): the fleet backup's
    figure is the orchestration's cost over its floor, not Borg reading /etc 100 times."""
    data = yaml.safe_load(inventory.read_text())
    data["all"].setdefault("vars", {})["saveos_agent_sources"] = [
        "/etc/os-release",
        "/etc/hostname",
    ]
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    return inventory


def run_size(count: int, repeat: int, cold_repeat: int, net: str, scratch: Path) -> dict:
    lab = Lab(scratch / f"lab-{count}", net=net)
    colds, loads = [], {"cold": [], "warm": [], "ping": [], "backup": [], "floor": []}
    try:
        inventory = small_sources(lab.up(count))
        hosts = [h.name for h in lab.hosts()]
        ping_argv = ["ansible", "all", "-i", str(inventory), "-m", "ping"]
        deploy_argv = [sys.executable, "-m", "saveos_cli.app", "deploy"]
        deploy_argv += ["--inventory", str(inventory)]
        plain = bench_env()
        timed(ping_argv, plain, "ansible ping (warm-up)")
        pings = []
        for rep in range(cold_repeat):
            if rep:  # a first deploy again: wiped hosts, new database, new escrow store
                wipe = ["ansible", "all", "-i", str(inventory), "-m", "shell", "-a", WIPE]
                timed(wipe, plain, "wipe the hosts")
            data_dir = scratch / f"data-{count}-{rep}"
            with scratch_pg() as url, Api(url, data_dir) as api:
                saveos = deploy_env(api, data_dir)
                loads["ping"].append(loadavg())
                pings.append(timed(ping_argv, plain, "ansible ping")[0])
                loads["cold"].append(loadavg())
                cold, out = timed(deploy_argv, saveos, "cold deploy")
                cold_rows = check_recap(out, hosts, warm=False)
                colds.append(cold)
                changed = sum(r["changed"] for r in cold_rows.values())
                print(
                    f"  N={count}: ping {pings[-1]:.2f} s, cold deploy {cold:.2f} s (changed "
                    f"{changed}, ok={cold_rows[hosts[0]]['ok']}/host) load {loads['cold'][-1]}",
                    flush=True,
                )
                if rep < cold_repeat - 1:
                    continue
                warms = []
                for _rep in range(repeat):
                    loads["warm"].append(loadavg())
                    warm, out = timed(deploy_argv, saveos, "warm re-deploy")
                    rows = check_recap(out, hosts, warm=True)
                    warms.append(warm)
                    loads["ping"].append(loadavg())
                    pings.append(timed(ping_argv, plain, "ansible ping")[0])
                    print(
                        f"  N={count}: warm re-deploy {warm:.2f} s (changed=0 on {len(rows)} "
                        f"hosts, ok={rows[hosts[0]]['ok']}/host), ping {pings[-1]:.2f} s "
                        f"load {loads['warm'][-1]}",
                        flush=True,
                    )
                backups, floors = backup_figures(inventory, hosts, saveos, repeat, loads)
    finally:
        lab.down()
        shutil.rmtree(lab.dir, ignore_errors=True)
    ping_s, warm_s, cold_s = median(pings), median(warms), median(colds)
    backup_s, floor_s = median(backups), median(floors)
    return {
        "hosts": count,
        "ping_s": pings,
        "cold_s": colds,
        "warm_s": warms,
        "backup_s": backups,
        "backup_floor_s": floors,
        "loadavg": loads,
        "median": {
            "ping_s": ping_s,
            "cold_s": cold_s,
            "warm_s": warm_s,
            "backup_s": backup_s,
            "backup_floor_s": floor_s,
        },
        "warm_over_ping": warm_s / ping_s,
        "cold_over_ping": cold_s / ping_s,
        "backup_over_floor": backup_s / floor_s,
        "tasks_ok_per_host_warm": rows[hosts[0]]["ok"],
        "tasks_ok_per_host_cold": cold_rows[hosts[0]]["ok"],
    }


def backup_figures(inventory: Path, hosts: list[str], env: dict, repeat: int, loads: dict):
    """`saveos backup --inventory` against the same agent command run by `ansible -m command`."""
    floor_argv = ["ansible", "all", "-i", str(inventory), "-m", "ansible.builtin.command"]
    floor_argv += ["-a", "/usr/local/bin/saveos-agent --json backup"]
    backup_argv = [sys.executable, "-m", "saveos_cli.app", "backup", "--inventory", str(inventory)]
    backups, floors = [], []
    for _rep in range(repeat):
        loads["floor"].append(loadavg())
        floor, out = timed(floor_argv, env, "ansible -m command saveos-agent backup")
        if out.count("CHANGED") + out.count("SUCCESS") < len(hosts):
            raise RuntimeError(f"the floor's backup did not succeed on every host:\n{out[-3000:]}")
        floors.append(floor)
        loads["backup"].append(loadavg())
        backups.append(timed(backup_argv, env, "saveos backup")[0])
        print(
            f"  N={len(hosts)}: saveos backup {backups[-1]:.2f} s, floor {floor:.2f} s "
            f"load {loads['backup'][-1]}",
            flush=True,
        )
    return backups, floors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,10,20,50,100", help="comma-separated fleet sizes")
    parser.add_argument(
        "--repeat", type=int, default=3, help="warm re-deploys, pings and backups per N"
    )
    parser.add_argument("--cold-repeat", type=int, default=1, help="cold deploys per N")
    parser.add_argument(
        "--net", default=os.environ.get("SAVEOS_TEST_LAB_NET", "127.0.7"), help="lab /24 prefix"
    )
    parser.add_argument("--name", default="p1_deploy")
    args = parser.parse_args()
    sizes = [int(n) for n in args.hosts.split(",") if n.strip()]

    build_zipapp()

    # Under root's home: lab hosts see /root empty, unlike the shared /tmp (escrowed secrets).
    scratch = Path(tempfile.mkdtemp(prefix="saveos-bench-p1-", dir=Path.home()))
    results = []
    try:
        for count in sizes:
            print(f"N={count}: lab up, fresh database, API", flush=True)
            results.append(run_size(count, args.repeat, args.cold_repeat, args.net, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(
        f"{'hosts':>5} {'ping':>8} {'cold':>8} {'warm':>8} {'cold/ping':>9} {'warm/ping':>9}"
        f" {'backup':>8} {'floor':>8} {'bk/floor':>8}"
    )
    for r in results:
        m = r["median"]
        print(
            f"{r['hosts']:>5} {m['ping_s']:>7.2f}s {m['cold_s']:>7.2f}s {m['warm_s']:>7.2f}s "
            f"{r['cold_over_ping']:>8.2f}x {r['warm_over_ping']:>8.2f}x {m['backup_s']:>7.2f}s "
            f"{m['backup_floor_s']:>7.2f}s {r['backup_over_floor']:>7.2f}x"
        )
    goals = {}
    for r in results:
        n = r["hosts"]
        goals[f"warm_{n}"] = r["warm_over_ping"] <= GOAL_WARM_OVER_PING
        if n in (10, 100):
            limit = GOAL_COLD_OVER_PING_10 if n == 10 else GOAL_COLD_OVER_PING_100
            goals[f"cold_{n}"] = r["cold_over_ping"] <= limit
        if n == 100:
            goals["backup_100"] = r["backup_over_floor"] <= GOAL_BACKUP_OVER_FLOOR
    for name, met in goals.items():
        print(f"goal {name}: {'met' if met else 'NOT met'}")
    print(f"loadavg at the end: {loadavg()}")
    params = {"hosts": sizes, "repeat": args.repeat, "cold_repeat": args.cold_repeat}
    params["net"] = args.net
    return finish(args.name, {"params": params, "goals": goals, "sizes": results})


if __name__ == "__main__":
    raise SystemExit(main())
