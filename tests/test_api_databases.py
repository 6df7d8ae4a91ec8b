"""The API keeps which databases each snapshot holds and what each drill restored (0011)."""

from __future__ import annotations

import pytest
from report_support import drill_report, snapshot_report

DUMPS = [
    {"name": "app", "type": "postgresql", "format": "custom", "size": 123456, "status": "ok"},
    {"name": "globals", "type": "postgresql", "format": "plain", "size": 900, "status": "ok"},
    {"name": "shop", "type": "mariadb", "format": "sql", "size": 0, "status": "error",
     "message": "mariadb-dump: Got error: 1045: Access denied"},
]  # fmt: skip


def test_snapshot_and_drill_databases_round_trip(api):
    agent_id, headers = api.agent("db1")
    r = api.client.post(
        "/api/v1/reports/snapshots",
        json=snapshot_report(status="error", databases=DUMPS),
        headers=headers,
    )
    assert r.status_code == 201, r.text
    older = api.client.post("/api/v1/reports/snapshots", json=snapshot_report(), headers=headers)
    assert older.status_code == 201
    page = api.client.get(f"/api/v1/agents/{agent_id}/snapshots", headers=api.admin).json()
    by_archive = {s["report_id"]: s for s in page["snapshots"]}
    with_dbs = next(s for s in by_archive.values() if s["databases"])
    assert with_dbs["databases"][0] == {**DUMPS[0], "message": None}
    assert with_dbs["databases"][2]["message"].startswith("mariadb-dump")
    assert sum(1 for s in by_archive.values() if s["databases"] is None) == 1
    drill = drill_report(
        databases=[{"name": "app", "type": "postgresql", "result": "pass", "message": "2 tables"}]
    )
    assert api.client.post("/api/v1/reports/drills", json=drill, headers=headers).status_code == 201


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "oracle"}, "type"),
        ({"name": "bad name"}, "name"),
        ({"size": -1}, "size"),
        ({"status": "fine"}, "status"),
        ({"password": "x"}, "password"),
    ],
)
def test_bad_database_entry_is_rejected_naming_the_field(api, change, field):
    _, headers = api.agent("db1")
    body = snapshot_report(databases=[{**DUMPS[0], **change}])
    r = api.client.post("/api/v1/reports/snapshots", json=body, headers=headers)
    assert r.status_code == 422 and field in r.text, r.text
