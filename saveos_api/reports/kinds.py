"""The four reports an agent sends: where each is posted, its schema and its table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saveos_api import schemas
from saveos_api.deps import API_PREFIX
from saveos_api.models import CheckResult, DrillResult, OffsiteSync, Snapshot


@dataclass(frozen=True)
class Kind:
    name: str  # the path: /api/v1/reports/<name>
    schema: type[schemas.Input]
    model: type
    exclude: frozenset[str] = frozenset()  # fields stored elsewhere, not in the report's row

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/reports/{self.name}"

    def row(self, body: schemas.Input) -> dict[str, Any]:
        values = body.model_dump(exclude=set(self.exclude))
        if "warnings" in values and values["warnings"] is None:
            values["warnings"] = []
        return values


SNAPSHOTS = Kind("snapshots", schemas.SnapshotReport, Snapshot, frozenset({"repository"}))
CHECKS = Kind("checks", schemas.CheckReport, CheckResult)
DRILLS = Kind("drills", schemas.DrillReport, DrillResult)
OFFSITE = Kind("offsite", schemas.OffsiteReport, OffsiteSync)
KINDS = (SNAPSHOTS, CHECKS, DRILLS, OFFSITE)
