"""The heartbeat writer: lanes that each drain a queue of beats and write them as one batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException
from sqlalchemy.exc import DBAPIError, OperationalError

from saveos_api.heartbeats import portable, postgres
from saveos_api.heartbeats.batch import Beat
from saveos_api.models import utcnow
from saveos_api.schemas import HeartbeatIn

log = logging.getLogger("saveos_api.heartbeats")
MAX_BATCH = 512
PG_LANES = 2
EXPIRY_EVERY = timedelta(seconds=60)


class _Lane:
    """One writer: its own queue, thread and connection (only ever used from that thread)."""

    def __init__(self, name: str):
        self.queue: asyncio.Queue[Beat] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: sa.Connection | None = None
        self.task: asyncio.Task | None = None

    def disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.invalidate()  # its session settings must not go back to the pool
                self.conn.close()
            self.conn = None


class HeartbeatWriter:
    def __init__(self, app_state: Any):
        self.state = app_state
        self.lanes: list[_Lane] = []
        self.next_expiry: datetime | None = None

    async def start(self) -> None:
        await self.stop()
        # On PostgreSQL, PG_LANES batches may be in the database at once: while one waits for
        # its commit (WAL flush, a busy CPU), the next one is written. SQLite has one writer.
        lanes = 1 if self.state.db.is_sqlite else PG_LANES
        for i in range(lanes):
            lane = _Lane(f"saveos-heartbeats-{i}")
            lane.task = asyncio.create_task(self._run(lane), name=f"saveos-heartbeat-writer-{i}")
            self.lanes.append(lane)

    async def stop(self) -> None:
        lanes, self.lanes = self.lanes, []
        loop = asyncio.get_running_loop()
        for lane in lanes:
            if lane.task.get_loop() is not loop:
                # Left behind by another event loop (a TestClient used without `with`).
                lane.executor.shutdown(wait=False)
                continue
            lane.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lane.task
            await loop.run_in_executor(lane.executor, lane.disconnect)
            lane.executor.shutdown()

    def _write_batch(
        self, lane: _Lane, batch: list[Beat], expire: bool
    ) -> list[dict[str, Any] | HTTPException]:
        """Runs in the lane's thread. A broken connection is dropped, so the retry (and the
        next batch) connects afresh instead of failing on a connection that is gone."""
        try:
            if lane.conn is None:
                lane.conn = self.state.db.engine.connect()
                if lane.conn.dialect.name == "postgresql":
                    lane.conn = postgres.prepare(lane.conn)
            if lane.conn.dialect.name == "postgresql":
                return postgres.write(self.state, lane.conn, batch, expire)
            return portable.write(self.state, lane.conn, batch, expire)
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                lane.disconnect()
            raise
        except sa.exc.SQLAlchemyError:
            lane.disconnect()
            raise

    async def submit(self, token: str, body: HeartbeatIn) -> dict[str, Any]:
        if not self.lanes or any(
            lane.task.done() or lane.task.get_loop() is not asyncio.get_running_loop()
            for lane in self.lanes
        ):
            # The lifespan did not run on this loop (e.g. a TestClient used without `with`).
            await self.start()
        beat = Beat(token, body, asyncio.get_running_loop().create_future())
        # hash() is stable for the life of the process, which is all the routing needs.
        self.lanes[hash(token) % len(self.lanes)].queue.put_nowait(beat)
        return await beat.future

    async def _run(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await lane.queue.get()]
            while len(batch) < MAX_BATCH and not lane.queue.empty():
                batch.append(lane.queue.get_nowait())
            self.state.metrics.heartbeat_batch.observe(len(batch))
            # Decided here, on the event loop, so one lane expires jobs per period.
            now = utcnow()
            expire = self.next_expiry is None or now >= self.next_expiry
            if expire:
                self.next_expiry = now + EXPIRY_EVERY
            try:
                try:
                    results = await loop.run_in_executor(
                        lane.executor, self._write_batch, lane, batch, expire
                    )
                except OperationalError as exc:
                    # E.g. a dropped connection, or a deadlock with an admin transaction: the
                    # transaction was rolled back as a whole, so running it again (on a fresh
                    # connection if need be) is safe.
                    log.warning("heartbeat batch of %d failed, retrying: %s", len(batch), exc)
                    results = await loop.run_in_executor(
                        lane.executor, self._write_batch, lane, batch, expire
                    )
            except Exception as exc:  # noqa: BLE001 - answer every waiter, keep the writer alive
                log.error("heartbeat batch of %d failed: %s", len(batch), exc)
                results = [HTTPException(503, detail="database unavailable")] * len(batch)
            for beat, result in zip(batch, results, strict=True):
                if beat.future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    beat.future.set_exception(result)
                else:
                    beat.future.set_result(result)
