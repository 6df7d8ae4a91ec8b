"""Group commit: writer lanes that each drain a queue and write what waits there as one batch.

A lane is a queue, one thread and one database connection used only from that thread, so a
batch costs no pool checkout, no liveness ping and no thread-pool handoff. Items are routed to
a lane by a key (an agent's token), so one agent's rows are only ever written by one lane of a
process and its batches never wait for each other's locks. Each waiter is answered only after
its batch's transaction committed (or with the refusal the batch decided for it).

Subclasses say how to set up a lane's connection (`connect`) and how to write a batch
(`write`, in the lane's thread); `decide` runs on the event loop before each batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger("saveos_api.lanes")
MAX_BATCH = 512
PG_LANES = 2


class _Lane:
    def __init__(self, name: str):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: sa.Connection | None = None
        self.task: asyncio.Task | None = None

    def disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.invalidate()  # its session settings must not go back to the pool
                self.conn.close()
            self.conn = None


class Lanes:
    """Items with a `future` attribute in, one result (or exception) per item out."""

    name = "batch"

    def __init__(self, app_state: Any):
        self.state = app_state
        self.lanes: list[_Lane] = []

    # ---- what a subclass says ----
    def connect(self, conn: sa.Connection) -> sa.Connection:
        return conn

    def decide(self) -> Any:
        """Per batch, on the event loop (e.g. whether this batch also expires jobs)."""
        return None

    def write(self, conn: sa.Connection, batch: list, decided: Any) -> list:
        raise NotImplementedError

    def observe(self, size: int) -> None:
        pass

    # ---- the machinery ----
    async def start(self) -> None:
        await self.stop()
        # On PostgreSQL, PG_LANES batches may be in the database at once: while one waits for
        # its commit (WAL flush, a busy CPU), the next one is written. SQLite has one writer.
        for i in range(1 if self.state.db.is_sqlite else PG_LANES):
            lane = _Lane(f"saveos-{self.name}-{i}")
            lane.task = asyncio.create_task(self._run(lane), name=f"saveos-{self.name}-writer-{i}")
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

    async def enqueue(self, key: str, item) -> Any:
        if not self.lanes or any(
            lane.task.done() or lane.task.get_loop() is not asyncio.get_running_loop()
            for lane in self.lanes
        ):
            # The lifespan did not run on this loop (e.g. a TestClient used without `with`).
            await self.start()
        # hash() is stable for the life of the process, which is all the routing needs.
        self.lanes[hash(key) % len(self.lanes)].queue.put_nowait(item)
        return await item.future

    def _write_batch(self, lane: _Lane, batch: list, decided: Any) -> list:
        """Runs in the lane's thread. A broken connection is dropped, so the retry (and the
        next batch) connects afresh instead of failing on a connection that is gone."""
        try:
            if lane.conn is None:
                lane.conn = self.connect(self.state.db.engine.connect())
            return self.write(lane.conn, batch, decided)
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                lane.disconnect()
            raise
        except sa.exc.SQLAlchemyError:
            lane.disconnect()
            raise

    async def _run(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await lane.queue.get()]
            while len(batch) < MAX_BATCH and not lane.queue.empty():
                batch.append(lane.queue.get_nowait())
            self.observe(len(batch))
            decided = self.decide()
            try:
                try:
                    results = await loop.run_in_executor(
                        lane.executor, self._write_batch, lane, batch, decided
                    )
                except OperationalError as exc:
                    # E.g. a dropped connection, or a deadlock with another transaction: the
                    # transaction was rolled back as a whole, so running it again (on a fresh
                    # connection if need be) is safe.
                    log.warning("%s batch of %d failed, retrying: %s", self.name, len(batch), exc)
                    results = await loop.run_in_executor(
                        lane.executor, self._write_batch, lane, batch, decided
                    )
            except Exception as exc:  # noqa: BLE001 - answer every waiter, keep the writer alive
                log.error("%s batch of %d failed: %s", self.name, len(batch), exc)
                results = [HTTPException(503, detail="database unavailable")] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
