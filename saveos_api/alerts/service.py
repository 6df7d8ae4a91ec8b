"""The alert machinery inside each API worker: evaluator, delivery worker and dead-man ping.

Both loops run the blocking work (SQLAlchemy, Apprise) in threads, so requests never wait on
them; the evaluator and the outbox scan share one thread, channels are drained on a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor

import sqlalchemy as sa

from saveos_api.alerts import channels as ch
from saveos_api.alerts.evaluator import Evaluator, PassResult, _insert_ignore
from saveos_api.alerts.outbox import Outbox
from saveos_api.models import AlertChannel, utcnow
from saveos_api.settings import ConfigError, read_private

log = logging.getLogger("saveos_api.alerts")
CHANNEL_THREADS = 8


def settings_channels(settings) -> list[ch.ChannelSpec]:
    """The channels declared in SAVEOS_ALERT_CHANNELS / SAVEOS_ALERT_CHANNELS_FILE, checked."""
    specs = []
    try:
        if settings.alert_channels is not None:
            specs += ch.specs_from_text(
                settings.alert_channels.get_secret_value(), "SAVEOS_ALERT_CHANNELS"
            )
        if settings.alert_channels_file is not None:
            path = settings.alert_channels_file
            specs += ch.specs_from_text(read_private(path), str(path))
    except ch.ChannelError as exc:
        raise ConfigError(str(exc)) from None
    return specs


def sync_settings_channels(db, sealer: ch.Sealer, specs: list[ch.ChannelSpec]) -> None:
    """Make the table's `settings` channels what the settings say (added, updated, disabled)."""
    now = utcnow()
    with db.sessions() as session:
        hashes = set()
        for spec in specs:
            digest = sealer.digest(spec.url)
            hashes.add(digest)
            values = {
                "name": spec.name,
                "labels": spec.labels,
                "min_status": spec.min_status,
                "digest": spec.digest,
                "source": "settings",
                "disabled_at": None,
            }
            inserted = _insert_ignore(
                session,
                AlertChannel,
                {
                    **values,
                    "url_encrypted": sealer.seal(spec.url),
                    "url_hash": digest,
                    "url_redacted": ch.display(spec.url),
                    "created_at": now,
                },
            )
            if not inserted:
                session.execute(
                    sa.update(AlertChannel).where(AlertChannel.url_hash == digest).values(**values)
                )
        stale = sa.update(AlertChannel).where(
            AlertChannel.source == "settings", AlertChannel.disabled_at.is_(None)
        )
        if hashes:
            stale = stale.where(AlertChannel.url_hash.not_in(hashes))
        session.execute(stale.values(disabled_at=now))
        session.commit()


class AlertService:
    def __init__(self, app_state):
        self.db = app_state.db
        self.settings = app_state.settings
        self.sealer = ch.Sealer(app_state.secret_key)
        self.specs = settings_channels(self.settings)
        self.evaluator = Evaluator(self.db, self.settings)
        self.outbox = Outbox(self.db, self.settings, self.sealer)
        self.last_pass: PassResult | None = None
        self.last_pass_at: float | None = None
        self._tasks: list[asyncio.Task] = []
        self._draining: dict[int, Future] = {}
        self._scan: ThreadPoolExecutor | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._kick: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._last_ping = 0.0
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        # One app served twice at once (two test clients, each its own event loop): the loops
        # run once, in the first; the last to stop ends them.
        self._users += 1
        if not self.settings.alerts_enabled or self._users > 1:
            return
        self._loop = asyncio.get_running_loop()
        self._scan = ThreadPoolExecutor(1, thread_name_prefix="saveos-alerts")
        self._pool = ThreadPoolExecutor(CHANNEL_THREADS, thread_name_prefix="saveos-send")
        self._kick = asyncio.Event()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._scan, sync_settings_channels, self.db, self.sealer, self.specs
        )
        self._tasks = [
            asyncio.create_task(self._evaluate_loop(), name="saveos-alert-evaluator"),
            asyncio.create_task(self._outbox_loop(), name="saveos-alert-outbox"),
        ]

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        self._stopping.set()
        here = asyncio.get_running_loop() is self._loop
        for task in self._tasks:
            if here:
                task.cancel()
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(task.cancel)
        for task in self._tasks if here else ():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Sends under way finish and are marked sent (a restart must not send them again);
        # drains not started yet are dropped, their rows wait in the outbox.
        for pool in (self._pool, self._scan):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def _evaluate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(self._scan, self.evaluator.run)
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again later
                log.warning("alerts: evaluation failed: %s", exc)
            else:
                if result.ran:
                    self.last_pass, self.last_pass_at = result, time.time()
                    if result.flips or result.queued:
                        log.info(
                            "alerts: %d flip(s), %d notice(s) queued in %.2fs over %d agents",
                            result.flips,
                            result.queued,
                            result.seconds,
                            result.agents,
                        )
                    if result.queued:
                        self._kick.set()
                    await self._deadman(loop)
            await asyncio.sleep(self.settings.alert_evaluate_s)

    async def _outbox_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._kick.clear()
            try:
                due = await loop.run_in_executor(self._scan, self.outbox.due)
            except Exception as exc:  # noqa: BLE001
                log.warning("alerts: reading the outbox failed: %s", exc)
                due = {}
            for channel_id, ids in due.items():
                running = self._draining.get(channel_id)
                if running is not None and not running.done():
                    continue  # that channel is still busy; the others go on
                self._draining[channel_id] = self._pool.submit(self._drain, channel_id, ids)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.settings.alert_outbox_s)

    def _drain(self, channel_id: int, ids: list[int]) -> None:
        try:
            self.outbox.drain(channel_id, ids, self._stopping)
        except Exception as exc:  # noqa: BLE001 - logged; the rows stay in the outbox
            log.warning("alerts: delivery to channel %d failed: %s", channel_id, exc)

    async def _deadman(self, loop) -> None:
        """Ping the dead-man URL: only after a pass of this worker's evaluator, so the ping
        says the evaluator runs and the database answers."""
        if self.settings.deadman_url is None:
            return
        now = time.monotonic()
        if self._last_ping and now - self._last_ping < self.settings.deadman_interval_s:
            return
        self._last_ping = now
        url = self.settings.deadman_url.get_secret_value()
        try:
            await loop.run_in_executor(self._pool, _ping, url)
        except Exception as exc:  # noqa: BLE001 - never the URL in the log: it is a secret
            log.warning("alerts: dead-man ping failed (%s)", type(exc).__name__)


def _ping(url: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "SaveOS"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - operator's URL
        resp.read(1024)
