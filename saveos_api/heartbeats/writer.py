"""The heartbeat writer: group-commit lanes (saveos_api/lanes.py) writing batches of beats."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from saveos_api.heartbeats import portable, postgres
from saveos_api.heartbeats.batch import Beat
from saveos_api.lanes import Lanes
from saveos_api.models import utcnow
from saveos_api.schemas import HeartbeatIn

EXPIRY_EVERY = timedelta(seconds=60)


class HeartbeatWriter(Lanes):
    name = "heartbeat"

    def __init__(self, app_state: Any):
        super().__init__(app_state)
        self.next_expiry: datetime | None = None

    def connect(self, conn: sa.Connection) -> sa.Connection:
        return postgres.prepare(conn) if conn.dialect.name == "postgresql" else conn

    def decide(self) -> bool:
        # Decided on the event loop, so one lane expires jobs per period.
        now = utcnow()
        expire = self.next_expiry is None or now >= self.next_expiry
        if expire:
            self.next_expiry = now + EXPIRY_EVERY
        return expire

    def write(self, conn: sa.Connection, batch: list[Beat], expire: bool) -> list:
        batches = postgres if conn.dialect.name == "postgresql" else portable
        return batches.write(self.state, conn, batch, expire)

    def observe(self, size: int) -> None:
        self.state.metrics.heartbeat_batch.observe(size)

    async def submit(self, token: str, body: HeartbeatIn) -> dict[str, Any]:
        beat = Beat(token, body, asyncio.get_running_loop().create_future())
        return await self.enqueue(token, beat)
