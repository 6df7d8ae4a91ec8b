"""The reports an agent sends, as the tests and benchmarks build them (standard library only:
the load generator's processes import it too)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def report_id() -> str:
    return uuid.uuid4().hex


def snapshot_report(finished: datetime | None = None, status: str = "ok", **extra) -> dict:
    finished = finished or datetime.now(UTC)
    body = {
        "report_id": report_id(),
        "repo": "/var/lib/saveos/repo",
        "archive": f"host-{finished:%Y%m%dT%H%M%S}",
        "started_at": iso(finished - timedelta(seconds=30)),
        "finished_at": iso(finished),
        "duration_s": 30.0,
        "nfiles": 10,
        "original_size": 1000,
        "compressed_size": 600,
        "deduplicated_size": 100,
        "exit_status": status,
        "rc": {"ok": 0, "warning": 1, "error": 2}[status],
    }
    body.update(extra)
    return body


def check_report(finished: datetime | None = None, result: str = "ok", **extra) -> dict:
    finished = finished or datetime.now(UTC)
    body = {
        "report_id": report_id(),
        "repository": {"url": "/var/lib/saveos/repo"},
        "started_at": iso(finished - timedelta(seconds=5)),
        "finished_at": iso(finished),
        "verify_data": False,
        "result": result,
        "rc": 0 if result == "ok" else 2,
    }
    body.update(extra)
    return body


def drill_report(finished: datetime | None = None, result: str = "pass", **extra) -> dict:
    finished = finished or datetime.now(UTC)
    body = {
        "report_id": report_id(),
        "archive": "host-1",
        "started_at": iso(finished - timedelta(seconds=5)),
        "finished_at": iso(finished),
        "files_checked": 5,
        "files_matched": 5 if result == "pass" else 4,
        "files_mismatched": 0 if result == "pass" else 1,
        "result": result,
    }
    body.update(extra)
    return body


def offsite_report(finished: datetime | None = None, result: str = "ok", **extra) -> dict:
    finished = finished or datetime.now(UTC) - timedelta(seconds=5)
    body = {
        "report_id": report_id(),
        "target": "s3://bucket/fleet/web1/",
        "started_at": iso(finished - timedelta(seconds=3)),
        "finished_at": iso(finished),
        "duration_s": 3.0,
        "objects": 12,
        "objects_uploaded": 3,
        "bytes_uploaded": 4096,
        "objects_deleted": 1,
        "result": result,
        "message": "3 of 12 objects uploaded",
    }
    body.update(extra)
    return body
