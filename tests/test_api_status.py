"""The status function, branch by branch and at every boundary (strict: a deadline is on time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from saveos_api.status import StatusInput, compute_status

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HB, INTERVAL, GRACE = 60, 3600, 600


def s(seconds: float) -> datetime:
    """An instant `seconds` before NOW."""
    return NOW - timedelta(seconds=seconds)


def status(**kw) -> str:
    base = dict(
        now=NOW,
        created_at=s(10 * 86400),
        heartbeat_interval_s=HB,
        backup_interval_s=INTERVAL,
        backup_grace_s=GRACE,
        last_heartbeat=s(10),
        last_snapshot_status="ok",
        last_success_at=s(60),
        last_check_result=None,
    )
    base.update(kw)
    return compute_status(StatusInput(**base))


CASES = [
    # (id, overrides, expected)
    ("fresh backup", {}, "ok"),
    ("warning snapshot counts as success", {"last_snapshot_status": "warning"}, "ok"),
    ("check ok", {"last_check_result": "ok"}, "ok"),
    ("check warning is not failing", {"last_check_result": "warning"}, "ok"),
    # late / overdue boundaries
    ("exactly at interval: ok", {"last_success_at": s(INTERVAL)}, "ok"),
    ("1 us past interval: late", {"last_success_at": s(INTERVAL + 1e-6)}, "late"),
    ("exactly at interval+grace: late", {"last_success_at": s(INTERVAL + GRACE)}, "late"),
    ("past interval+grace: overdue", {"last_success_at": s(INTERVAL + GRACE + 1e-6)}, "overdue"),
    (
        "zero grace goes straight to overdue",
        {"backup_grace_s": 0, "last_success_at": s(INTERVAL + 1)},
        "overdue",
    ),
    # never
    ("no snapshot at all", {"last_snapshot_status": None, "last_success_at": None}, "never"),
    (
        "only failed snapshots: failing beats never",
        {"last_snapshot_status": "error", "last_success_at": None},
        "failing",
    ),
    # failing
    ("last snapshot error", {"last_snapshot_status": "error"}, "failing"),
    ("last check error", {"last_check_result": "error"}, "failing"),
    (
        "failing beats overdue",
        {"last_snapshot_status": "error", "last_success_at": s(10 * INTERVAL)},
        "failing",
    ),
    # silent boundaries (3 heartbeat intervals)
    ("heartbeat exactly 3 intervals ago: not silent", {"last_heartbeat": s(3 * HB)}, "ok"),
    ("heartbeat just over 3 intervals: silent", {"last_heartbeat": s(3 * HB + 1e-6)}, "silent"),
    (
        "silent beats failing",
        {"last_heartbeat": s(3600), "last_snapshot_status": "error"},
        "silent",
    ),
    (
        "silent beats never",
        {"last_heartbeat": s(3600), "last_success_at": None, "last_snapshot_status": None},
        "silent",
    ),
    (
        "never heartbeat, created recently: never",
        {
            "last_heartbeat": None,
            "created_at": s(3 * HB),
            "last_success_at": None,
            "last_snapshot_status": None,
        },
        "never",
    ),
    (
        "never heartbeat, created long ago: silent",
        {
            "last_heartbeat": None,
            "created_at": s(3 * HB + 1e-6),
            "last_success_at": None,
            "last_snapshot_status": None,
        },
        "silent",
    ),
    (
        "longer heartbeat interval stretches silence",
        {"heartbeat_interval_s": 600, "last_heartbeat": s(1700)},
        "ok",
    ),
    # locked: the last backup gave up on a repository lock
    (
        "last snapshot failed on a lock",
        {"last_snapshot_status": "error", "last_snapshot_locked": True},
        "locked",
    ),
    (
        "locked beats a failed check",
        {
            "last_snapshot_status": "error",
            "last_snapshot_locked": True,
            "last_check_result": "error",
        },
        "locked",
    ),
    (
        "locked beats never and overdue",
        {"last_snapshot_status": "error", "last_snapshot_locked": True, "last_success_at": None},
        "locked",
    ),
    (
        "silent beats locked",
        {
            "last_heartbeat": s(3600),
            "last_snapshot_status": "error",
            "last_snapshot_locked": True,
        },
        "silent",
    ),
    (
        "a lock flag on a good snapshot means nothing",
        {"last_snapshot_status": "ok", "last_snapshot_locked": True},
        "ok",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_status_table(overrides, expected):
    assert status(**overrides) == expected
