"""The four reports an agent sends: where each is posted, its schema and its table."""

from __future__ import annotations

from collections.abc import Callable
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
    # Columns the row takes from the body otherwise than by name.
    derived: Callable[[Any], dict[str, Any]] = lambda body: {}

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/reports/{self.name}"

    def row(self, body: schemas.Input) -> dict[str, Any]:
        values = body.model_dump(exclude=set(self.exclude)) | self.derived(body)
        if "warnings" in values and values["warnings"] is None:
            values["warnings"] = []
        return values


# A report about one repository stores its URL as `repository`, whichever key named it.
IN_REPOSITORY = frozenset({"repo", "repository"})


def _repository(body) -> dict[str, Any]:
    return {"repository": body.repository_url}


SNAPSHOTS = Kind("snapshots", schemas.SnapshotReport, Snapshot, IN_REPOSITORY, _repository)
CHECKS = Kind("checks", schemas.CheckReport, CheckResult, IN_REPOSITORY, _repository)
DRILLS = Kind("drills", schemas.DrillReport, DrillResult)
OFFSITE = Kind("offsite", schemas.OffsiteReport, OffsiteSync)
KINDS = (SNAPSHOTS, CHECKS, DRILLS, OFFSITE)
