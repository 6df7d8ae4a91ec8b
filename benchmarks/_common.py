"""Shared helpers for the benchmark scripts: scratch PostgreSQL databases, the API process,
medians over repeated runs, and the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PG_ADMIN = os.environ.get(
    "SAVEOS_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
PORT_RANGE = range(
    int(os.environ.get("SAVEOS_BENCH_PORT_LO", "18700")),
    int(os.environ.get("SAVEOS_BENCH_PORT_HI", "18799")) + 1,
)
# Taken when a benchmark imports this module, at its start: the result file is written at the
# end, when the load is the run's own.
STARTED_AT = time.gmtime()
LOAD_AT_START = os.getloadavg()
UTC_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def free_port() -> int:
    """A free loopback port from the benchmark's own range."""
    for port in PORT_RANGE:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in the benchmark range")


def _pg_exec(sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


@contextmanager
def scratch_pg():
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"saveos_bench_{uuid.uuid4().hex[:10]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Api:
    """`saveos server` as a separate process, the way operators run it."""

    def __init__(self, database_url: str, data_dir: Path, workers: int = 1, tls: bool = False):
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        # HTTPS with a certificate from `saveos ca init` in the data dir (the server finds it).
        self.ca_file = data_dir / "tls" / "ca.crt" if tls else None
        self.admin_token = "adm_" + secrets.token_urlsafe(32)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(
            os.environ,
            SAVEOS_DATABASE_URL=database_url,
            SAVEOS_ADMIN_TOKEN=self.admin_token,
            SAVEOS_DATA_DIR=str(data_dir),
        )
        self.log = data_dir / "api.log"
        if tls:
            subprocess.run(
                [sys.executable, "-m", "saveos_cli.app", "ca", "init", "--name", "127.0.0.1"],
                env=self.env, cwd=REPO, check=True, capture_output=True,
            )  # fmt: skip
        cmd = [sys.executable, "-m", "saveos_cli.app", "server", "--port", str(self.port)]
        cmd += ["--workers", str(workers)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait()

    def _wait(self) -> None:
        import httpx

        deadline = time.monotonic() + 180  # workers take a minute to start at load 20-30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("API exited:\n" + self.log.read_text()[-3000:])
            try:
                if (
                    httpx.get(self.url + "/health", timeout=1, verify=self.verify).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("API did not start:\n" + self.log.read_text()[-3000:])

    @property
    def verify(self):
        import ssl

        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def median(values):
    return statistics.median(values)


def medians(series: dict[str, list[float]]) -> dict[str, float]:
    return {key: median(values) for key, values in series.items()}


def median_fields(med: dict[str, float], med_cpu: dict[str, float]) -> dict[str, float]:
    """A summary's medians by name: `<series>_s` (wall) and `cpu_<series>_s`."""
    return {
        **{f"{k}_s": v for k, v in med.items()},
        **{f"cpu_{k}_s": v for k, v in med_cpu.items()},
    }


def run_line(i: int, load: float, times: dict[str, list[float]]) -> str:
    """The start of a per-run progress line: run number, load, each series' latest in ms."""
    latest = ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in times.items())
    return f"run {i + 1} (load {load:.1f}): {latest}"


def children_cpu() -> float:
    """user+system CPU seconds of every child process this one has waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(
    api: Api, argv: list[str], **env: str
) -> tuple[subprocess.CompletedProcess, float, float]:
    """`saveos ARGV` against `api` as a process of its own, the way an operator or cron runs it
    (output discarded, stderr kept): the process, its wall seconds and its CPU seconds."""
    env = dict(os.environ, SAVEOS_API_URL=api.url, SAVEOS_ADMIN_TOKEN=api.admin_token, **env)
    cpu0 = children_cpu()
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
    return proc, wall, children_cpu() - cpu0


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": LOAD_AT_START,
        "loadavg_at_end": os.getloadavg(),
    }


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {
        "benchmark": name,
        "started": time.strftime(UTC_STAMP, STARTED_AT),
        "when": time.strftime(UTC_STAMP, time.gmtime()),
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        **result,
    }
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def finish(name: str, result: dict) -> int:
    """A script's last step: write its result file, say where, exit 0."""
    print(f"wrote {write_result(name, result)}")
    return 0


def load_range(loads: list[float]) -> dict:
    """The 1-minute load averages seen during a run, as the result files keep them."""
    return {"min": min(loads), "median": median(loads), "max": max(loads)}


def write_agent_config(work: Path, settings: dict) -> Path:
    """agent.json (0600) for a benchmark's agent: `settings`, and a spool, state and log of its
    own in `work`."""
    config = {
        "hostname": "bench",
        "spool_dir": str(work / "spool"),
        "state_dir": str(work / "state"),
        "log_file": str(work / "agent.log"),
        **settings,
    }
    path = work / "agent.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def build_agent(out: Path) -> Path:
    """The agent zipapp at `out`, built by the system python3 as the role's hosts run it."""
    build = REPO / "agent" / "build.py"
    subprocess.run(
        ["/usr/bin/python3", str(build), "--out", str(out)], check=True, capture_output=True
    )
    return out


def agent_argv(pyz: Path, config: Path, command: str) -> list[str]:
    """The agent zipapp run as the role's wrapper runs it (the system python3), JSON output."""
    return ["/usr/bin/python3", str(pyz), "--config", str(config), "--json", command]


def write_borgmatic_config(
    work: Path, *, source: Path, repo: Path, passfile: Path, compression: str, extra: list[str]
) -> Path:
    """borgmatic.yaml (0600) backing `source` up into `repo` as the benchmarks' agents do
    (`bench-*` archives); `extra` adds the benchmark's own lines."""
    lines = [
        "source_directories:",
        f"    - {source}",
        "repositories:",
        f"    - path: {repo}",
        f"compression: {compression}",
        f"encryption_passcommand: cat {passfile}",
        "archive_name_format: 'bench-{now:%Y-%m-%dT%H:%M:%S.%f}'",
        # borgmatic otherwise adds its config and a manifest to every archive (2 files)
        "store_config_files: false",
        *extra,
    ]
    path = work / "borgmatic.yaml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return pids


def cpu_seconds(pids: list[int], reaped: bool = False) -> float:
    """user+system CPU of these processes (and their children) so far, from /proc; `reaped`
    adds what each has reaped (a process that outlives its commands, e.g. an sshd)."""
    tick = os.sysconf("SC_CLK_TCK")
    last = 15 if reaped else 13  # utime, stime[, cutime, cstime]
    total = 0
    for root in pids:
        for pid in _tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:last])
    return total / tick


def pg_backend_pids(url: str) -> list[int]:
    """PIDs of the PostgreSQL backends serving the database in `url` (same machine)."""
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(PG_ADMIN)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        ).scalars()
        pids = list(rows)
    engine.dispose()
    return pids
