"""P8 alerts at scale: the evaluator's pass over N agents, and a flood of N hosts turning late.

Timed in one run, on PostgreSQL (and SQLite with --sqlite), each --repeat times (median quoted):
  fleet_status   saveos_api.fleet.fleet_status() alone: what every pass must read (the floor)
  steady_pass    an evaluator pass when nothing changed (what the API pays every
                 SAVEOS_ALERT_EVALUATE_S)
  flood_pass     the one pass in which all N agents flip ok -> late: N conditional UPDATEs, N
                 flips, one summary per channel (burst 10), in one transaction (run once)
  deliver        the outbox sending the queued summaries to a loopback webhook (run once)
Ratio quoted: steady_pass / fleet_status (goal <= 1.5: the evaluator adds little to its read).

    python benchmarks/p8_alerts.py [--agents 1000,10000] [--repeat 5] [--sqlite]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
sys.path.insert(2, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import finish, free_port, median, scratch_pg  # noqa: E402
from alert_support import Webhook, bulk_agents  # noqa: E402

from saveos_api import migrations  # noqa: E402
from saveos_api.alerts.channels import Sealer, display  # noqa: E402
from saveos_api.alerts.evaluator import Evaluator  # noqa: E402
from saveos_api.alerts.outbox import Outbox  # noqa: E402
from saveos_api.db import Database  # noqa: E402
from saveos_api.fleet import fleet_status  # noqa: E402
from saveos_api.models import AlertChannel, AlertDelivery  # noqa: E402
from saveos_api.settings import Settings  # noqa: E402

GOAL_RATIO = 1.5
SECRET = b"benchmark-secret-key-0123456789abcdef"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(url: str, agents: int, repeat: int, hook: Webhook) -> dict:
    migrations.upgrade(url)
    db = Database(url)
    settings = Settings(database_url=url, admin_token="adm_" + "x" * 40, alert_burst=10)
    sealer = Sealer(SECRET)
    with db.sessions() as session:
        for path, floor, digest in (("/each", "late", False), ("/overdue", "overdue", False)):
            target = hook.url(path)
            session.add(
                AlertChannel(
                    url_encrypted=sealer.seal(target),
                    url_hash=sealer.digest(target),
                    url_redacted=display(target),
                    labels={},
                    min_status=floor,
                    digest=digest,
                    source="api",
                )
            )
        session.commit()
    t0 = datetime.now(UTC)
    late_at = t0 + timedelta(seconds=600)
    bulk_agents(db, agents, late_at)
    evaluator = Evaluator(db, settings)
    evaluator.run(now=t0)  # first sightings: every agent ok

    def read():
        with db.sessions() as session:
            fleet_status(session, t0)

    base = [timed(read) for _ in range(repeat)]
    steady = [timed(lambda: evaluator.run(now=t0)) for _ in range(repeat)]
    flood = evaluator.run(now=late_at + timedelta(seconds=1))
    outbox = Outbox(db, settings, sealer)
    with db.sessions() as session:  # the flood was evaluated 10 min ahead: due now
        session.execute(sa.update(AlertDelivery).values(next_attempt_at=datetime.now(UTC)))
        session.commit()
    before = len(hook.posts)
    started = time.perf_counter()
    for channel_id, ids in outbox.due().items():
        outbox.drain(channel_id, ids)
    deliver = time.perf_counter() - started
    messages = len(hook.posts) - before
    db.dispose()
    return {
        "agents": agents,
        "fleet_status_s": median(base),
        "steady_pass_s": median(steady),
        "ratio": median(steady) / median(base),
        "flood_pass_s": flood.seconds,
        "flood_flips": flood.flips,
        "flood_queued": flood.queued,
        "deliver_s": deliver,
        "messages": messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sqlite", action="store_true", help="also on SQLite")
    args = parser.parse_args()
    hook = Webhook(free_port()).start()
    rows = []
    try:
        for count in (int(n) for n in args.agents.split(",")):
            with scratch_pg() as url:
                rows.append({"db": "postgresql", **run(url, count, args.repeat, hook)})
            if args.sqlite:
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{tmp}/bench.db"
                    rows.append({"db": "sqlite", **run(url, count, args.repeat, hook)})
    finally:
        hook.stop()
    for r in rows:
        verdict = "met" if r["ratio"] <= GOAL_RATIO else "MISSED"
        print(
            f"P8 {r['db']:10} {r['agents']:>6,} agents: fleet_status {r['fleet_status_s']:.3f}s, "
            f"steady pass {r['steady_pass_s']:.3f}s ({r['ratio']:.2f}x, goal <= {GOAL_RATIO}: "
            f"{verdict}); flood {r['flood_flips']:,} flips -> {r['flood_queued']} notice(s) in "
            f"{r['flood_pass_s']:.2f}s, delivered {r['messages']} message(s) in "
            f"{r['deliver_s']:.2f}s"
        )
    finish("p8_alerts", {"rows": rows, "goal_ratio": GOAL_RATIO})


if __name__ == "__main__":
    main()
