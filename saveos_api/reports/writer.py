"""The report writer: group-commit lanes (saveos_api/lanes.py) writing batches of reports."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from saveos_api import schemas
from saveos_api.lanes import Lanes
from saveos_api.reports import batch
from saveos_api.reports.kinds import Kind


class ReportWriter(Lanes):
    name = "report"

    def write(self, conn: sa.Connection, reports: list[batch.Report], _decided) -> list:
        return batch.write(self.state, conn, reports)

    def observe(self, size: int) -> None:
        self.state.metrics.report_batch.observe(size)

    async def submit(self, token: str, kind: Kind, body: schemas.Input) -> batch.Answer:
        """(201 or 200, the ack) once committed; raises the HTTPException that refuses it."""
        report = batch.Report(token, kind, body, asyncio.get_running_loop().create_future())
        return await self.enqueue(token, report)
