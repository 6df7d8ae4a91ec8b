"""The evaluator: find status changes, write each as a flip exactly once, queue the notices.

One pass reads the fleet status as `saveos status` does (saveos_api/fleet.py, which applies the
one status rule in saveos_api/status.py), compares every agent with its alert_states row and
moves that row with `UPDATE ... WHERE status = <old>` (healthchecks' way): of several workers
that see the same change, only the one whose UPDATE matched writes the flip, and the flip and
its notices are committed in the same transaction, so a notice exists only for a written flip.
Passes also run one at a time: a PostgreSQL advisory lock (the others skip), a file lock on
SQLite (which has one writer anyway).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from saveos_api.alerts import messages
from saveos_api.alerts.channels import matches, wants
from saveos_api.alerts.levels import is_trouble
from saveos_api.db import Database
from saveos_api.fleet import fleet_status
from saveos_api.models import Agent, AlertChannel, AlertDelivery, AlertState, Flip, utcnow
from saveos_api.status import SILENT_AFTER_INTERVALS

log = logging.getLogger("saveos_api.alerts")
ADVISORY_KEY = 0x5A7E_0020  # "SaveOS alerts", any constant the app uses for nothing else


@dataclass
class PassResult:
    ran: bool  # False: another worker holds the evaluator lock
    agents: int = 0
    flips: int = 0
    queued: int = 0
    seconds: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass
class Change:
    agent: dict[str, Any]
    old: str | None
    new: str
    reason: str
    flip_id: int | None  # None: a repeat of an unchanged status
    since: datetime | None = None  # repeats: since when the status holds


@contextmanager
def _sqlite_lock(db: Database):
    """A file lock beside the SQLite database: one evaluator across workers, others skip."""
    database = sa.engine.make_url(db.url).database
    if not database or database == ":memory:":
        yield True
        return
    path = Path(database).with_name(Path(database).name + ".alerts-lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


CHUNK = 500  # agents per statement: an IN list or a VALUES list well under any limit


def _chunks(items: list) -> list[list]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def _insert(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _insert_ignore(session: Session, model, values: dict) -> int:
    """INSERT ... ON CONFLICT DO NOTHING; the number of rows inserted (0 or 1)."""
    statement = _insert(session)(model).values(**values).on_conflict_do_nothing()
    return session.execute(statement).rowcount


def _insert_ignore_returning(session: Session, model, rows: list[dict], column) -> list:
    """Many rows, ON CONFLICT DO NOTHING: `column` of the rows this statement inserted."""
    statement = _insert(session)(model).values(rows).on_conflict_do_nothing().returning(column)
    return list(session.execute(statement).scalars())


class Evaluator:
    def __init__(self, db: Database, settings):
        self.db = db
        self.settings = settings
        self.started = utcnow()

    def _unheard(self, agent: dict[str, Any], now: datetime) -> bool:
        """A `silent` this worker cannot vouch for: nothing heard from the agent since the
        worker started, and it has not run long enough for the agent to have been heard. After
        an outage of SaveOS itself every agent looks silent; they are only unheard until they
        have had SILENT_AFTER_INTERVALS heartbeats' time to report (spooled reports included)."""
        if agent["status"] != "silent":
            return False
        heard = agent.get("last_heartbeat")
        if heard is not None and heard >= self.started:
            return False
        window = timedelta(seconds=SILENT_AFTER_INTERVALS * agent["heartbeat_interval_s"])
        return now - self.started < window

    def run(self, now: datetime | None = None) -> PassResult:
        started = time.perf_counter()
        if self.db.is_sqlite:
            with _sqlite_lock(self.db) as mine:
                result = self._sqlite_pass(now) if mine else PassResult(ran=False)
        else:
            result = self._pass(now)
        result.seconds = time.perf_counter() - started
        return result

    def _sqlite_pass(self, now: datetime | None) -> PassResult:
        # The pass reads, then writes: a heartbeat committed in between makes SQLite refuse the
        # write (its read snapshot is stale, which no busy timeout waits out). Read again.
        for attempt in range(3):
            try:
                return self._pass(now)
            except sa.exc.OperationalError:
                if attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _pass(self, now: datetime | None) -> PassResult:
        with self.db.sessions() as session:
            if not self._exclusive(session):
                return PassResult(ran=False)
            now = now or utcnow()
            fleet = fleet_status(session, now)
            agents = fleet["agents"]
            # Plain (id, status) pairs: ORM objects for 10,000 rows cost more than the fleet read.
            states = dict(session.execute(sa.select(AlertState.agent_id, AlertState.status)).all())
            changes = self._flips(session, agents, states, now)
            flips = len(changes)
            changes += self._repeats(session, agents, now)
            channels = session.scalars(
                sa.select(AlertChannel)
                .where(AlertChannel.disabled_at.is_(None))
                .order_by(AlertChannel.id)
            ).all()
            queued = 0
            if channels and (changes or any(c.digest for c in channels)):
                labels = dict(session.execute(sa.select(Agent.id, Agent.labels)).all())
                queued += self._route(session, changes, channels, labels, now)
                queued += self._digests(session, channels, agents, labels, now)
            session.commit()
        return PassResult(
            ran=True,
            agents=len(agents),
            flips=flips,
            queued=queued,
            by_status=dict(fleet["totals"]["by_status"]),
        )

    def _exclusive(self, session: Session) -> bool:
        """PostgreSQL: this transaction holds the evaluator's advisory lock (SQLite: run())."""
        if self.db.is_sqlite:
            return True
        query = sa.text("SELECT pg_try_advisory_xact_lock(:k)")
        return bool(session.execute(query, {"k": ADVISORY_KEY}).scalar_one())

    # -- flips -----------------------------------------------------------------------------

    def _flips(self, session, agents, states, now) -> list[Change]:
        """Move every changed agent's row, set-wise: one statement per (old, new) pair and
        CHUNK agents, each answering which rows it moved (RETURNING); only those get a flip."""
        fresh, moves = [], defaultdict(list)
        for agent in agents:
            status = states.get(agent["id"])
            if self._unheard(agent, now):
                continue
            if status is None:
                fresh.append(agent)
            elif status != agent["status"]:
                moves[(status, agent["status"])].append(agent)
        won: list[tuple[dict, str | None]] = []
        for chunk in _chunks(fresh):
            rows = [
                {"agent_id": a["id"], "status": a["status"], "since": now, "notified_at": now}
                for a in chunk
            ]
            mine = set(_insert_ignore_returning(session, AlertState, rows, AlertState.agent_id))
            won += [(a, None) for a in chunk if a["id"] in mine]
        for (old, new), group in moves.items():
            for chunk in _chunks(group):
                moved = session.execute(
                    sa.update(AlertState)
                    .where(
                        AlertState.agent_id.in_([a["id"] for a in chunk]),
                        AlertState.status == old,  # the healthchecks condition: once only
                    )
                    .values(status=new, since=now, notified_at=now)
                    .returning(AlertState.agent_id)
                    .execution_options(synchronize_session=False)
                )
                mine = set(moved.scalars())
                won += [(a, old) for a in chunk if a["id"] in mine]
        if not won:
            return []
        reasons = [messages.reason(agent, now) for agent, _old in won]
        flip_ids = session.scalars(
            sa.insert(Flip).returning(Flip.id, sort_by_parameter_order=True),
            [
                {
                    "agent_id": agent["id"],
                    "from_status": old,
                    "to_status": agent["status"],
                    "at": now,
                    "reason": why,
                }
                for (agent, old), why in zip(won, reasons, strict=True)
            ],
        ).all()
        changes = []
        for (agent, old), why, flip_id in zip(won, reasons, flip_ids, strict=True):
            if old is not None:
                log.info("flip: %s %s -> %s (%s)", agent["name"], old, agent["status"], why)
            changes.append(Change(agent, old, agent["status"], why, flip_id))
        return changes

    def _repeats(self, session, agents, now) -> list[Change]:
        """A notice again for each agent whose bad status outlasted SAVEOS_ALERT_REPEAT_S since
        its last one; the same conditional UPDATE (on notified_at) keeps it to one."""
        every = self.settings.alert_repeat_s
        if not every:
            return []
        due = now - timedelta(seconds=every)
        rows = session.execute(
            sa.select(
                AlertState.agent_id, AlertState.status, AlertState.since, AlertState.notified_at
            ).where(
                AlertState.status != "ok",
                sa.or_(AlertState.notified_at.is_(None), AlertState.notified_at <= due),
            )
        ).all()
        if not rows:
            return []
        by_id = {agent["id"]: agent for agent in agents}
        out = []
        for agent_id, status, since, notified_at in rows:
            agent = by_id.get(agent_id)
            if agent is None or agent["status"] != status:
                continue  # decommissioned, or changing: the flip speaks for it
            written = session.execute(
                sa.update(AlertState)
                .where(
                    AlertState.agent_id == agent_id,
                    AlertState.status == status,
                    AlertState.notified_at == notified_at
                    if notified_at is not None
                    else AlertState.notified_at.is_(None),
                )
                .values(notified_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if written == 1:
                why = messages.reason(agent, now)
                out.append(Change(agent, None, status, why, None, since))
        return out

    # -- notices ---------------------------------------------------------------------------

    def _route(self, session, changes, channels, labels, now) -> int:
        dashboard = self.settings.dashboard_url
        per_channel: dict[int, list[Change]] = defaultdict(list)
        for change in changes:
            host_labels = labels.get(change.agent["id"])
            for channel in channels:
                if channel.digest or not matches(channel.labels or {}, host_labels):
                    continue
                if change.old is None and change.flip_id is not None and change.new == "ok":
                    continue  # first seen healthy: nothing to say
                if wants(channel.min_status, change.old, change.new):
                    per_channel[channel.id].append(change)
        queued = 0
        for channel_id, items in per_channel.items():
            if len(items) > self.settings.alert_burst:
                notice = messages.summary_notice(
                    [(c.agent["name"], c.old, c.new) for c in items], now, dashboard
                )
                first = min((c.flip_id or 0) for c in items)
                key = f"summary:{now.isoformat()}:{first}"
                queued += self._queue(session, channel_id, "summary", key, notice, None, now)
                continue
            for c in items:
                if c.flip_id is None:
                    notice = messages.flip_notice(
                        c.agent, None, c.new, c.reason, now, dashboard, repeat_since=c.since
                    )
                    key = f"repeat:{c.agent['id']}:{now.isoformat()}"
                    kind = "repeat"
                else:
                    notice = messages.flip_notice(c.agent, c.old, c.new, c.reason, now, dashboard)
                    key = f"flip:{c.flip_id}"
                    kind = "recovery" if c.new == "ok" else "flip"
                queued += self._queue(session, channel_id, kind, key, notice, c.flip_id, now)
        return queued

    def _digests(self, session, channels, agents, labels, now) -> int:
        period_s = self.settings.alert_digest_period_s
        offset = self.settings.alert_digest_offset_s
        current = int((now.timestamp() - offset) // period_s)
        queued = 0
        for channel in channels:
            if not channel.digest or channel.digest_period == current:
                continue
            last = channel.digest_period
            moved = session.execute(
                sa.update(AlertChannel)
                .where(
                    AlertChannel.id == channel.id,
                    AlertChannel.digest_period == last
                    if last is not None
                    else AlertChannel.digest_period.is_(None),
                )
                .values(digest_period=current)
                .execution_options(synchronize_session=False)
            ).rowcount
            if moved != 1 or last is None:
                continue  # another worker sent it, or the channel's first period: start here
            since = datetime.fromtimestamp(offset + last * period_s, now.tzinfo)
            mine = [a for a in agents if matches(channel.labels or {}, labels.get(a["id"]))]
            bad = [
                (a["name"], a["status"])
                for a in mine
                if is_trouble(a["status"]) and wants(channel.min_status, None, a["status"])
            ]
            ids = [a["id"] for a in mine]
            flips = 0
            for chunk in range(0, len(ids), 1000):
                flips += session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Flip)
                    .where(
                        Flip.at >= since,
                        Flip.from_status.is_not(None),
                        Flip.agent_id.in_(ids[chunk : chunk + 1000]),
                    )
                )
            notice = messages.digest_notice(bad, flips, since, now, self.settings.dashboard_url)
            queued += self._queue(
                session, channel.id, "digest", f"digest:{current}", notice, None, now
            )
        return queued

    def _queue(self, session, channel_id, kind, key, notice, flip_id, now) -> int:
        return _insert_ignore(
            session,
            AlertDelivery,
            {
                "channel_id": channel_id,
                "flip_id": flip_id,
                "kind": kind,
                "dedupe_key": key,
                "notify_type": notice.notify_type,
                "title": notice.title[:250],
                "body": notice.body,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
