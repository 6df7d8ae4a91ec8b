"""Pure parts of central retention: rollback candidates, the retention's reach in days, the
offsite lock check, the state a run hands the next one."""

from __future__ import annotations

from saveos_cli.retention import verify
from saveos_cli.retention.fleet import retention_days

LOG = [
    {"id": 9, "time": "2026-12-01T08:00:00", "deletes": 0},
    {"id": 13, "time": "2026-12-01T09:00:00", "deletes": 0},
    {"id": 17, "time": "2026-12-01T10:00:00", "deletes": 4},
    {"id": 21, "time": "2026-12-01T11:00:00", "deletes": 0},
]


def test_rollback_candidates_stop_before_the_first_delete_newest_first():
    prev = verify.RepoState(transaction=5, finished_at="2026-12-01T07:00:00Z")
    got = verify.rollback_candidates(prev, {"logged_since": LOG})
    assert [c["id"] for c in got] == [13, 9, 5]
    assert got[-1]["time"] is None  # the central run's own transaction is not logged
    # nothing deleted (a re-keyed repository): every logged one, the newest first
    clean = [dict(t, deletes=0) for t in LOG]
    assert [c["id"] for c in verify.rollback_candidates(None, {"logged_since": clean})] == [
        21, 17, 13, 9,
    ]  # fmt: skip


def test_findings_name_what_is_gone_and_ignore_the_central_runs_own_work():
    prev = verify.RepoState(
        transaction=10,
        archives={"a1": "i1", "a2": "i2"},
        segments={"3": [100, 1, 1, None], "10": [50, 2, 2, None], "12": [9, 9, 9, None]},
        log_sha256=verify.log_sha256([[9, "t9"]], 10),
        key_sha256="k",
    )
    facts = {
        "segments": {"3": [100, 1, 1, None], "10": [51, 2, 2, None]},
        "transactions": [[9, "t9"], [13, "t13"]],
        "logged_since": [{"id": 13, "time": "t13", "deletes": 0}],
        "key_sha256": "k",
    }
    found = verify.findings(prev, facts, {"a1": "i1", "a2": "other"}, {"a3"})
    assert [f.kind for f in found] == ["segment_changed", "archive_missing", "archive_replaced"]
    assert found[0].items == (10,)  # segment 12 is after the recorded transaction: not checked
    assert found[1].items == ("a3",) and found[2].items == ("a2",)
    facts["transactions"] = [[9, "rewritten"], [13, "t13"]]
    assert verify.findings(prev, facts, None, ())[-1].kind == "log_rewritten"


def test_retention_days_is_the_longest_reach_of_the_policy():
    assert retention_days({"keep_within": "1d", "keep_daily": 7, "keep_weekly": 4}) == 28
    assert retention_days({"keep_monthly": 6}) == 186
    assert retention_days({"keep_within": "2w"}) == 14
    assert retention_days({"keep_last": 3}) == 0
