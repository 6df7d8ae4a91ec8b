"""R3 API outage: stop the API, back up every host, start it again; once the agents have flushed
their spools the database holds exactly one snapshot per archive in every repository."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from report_support import snapshot_report

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]


def db_archives(fleet, agent_id: int) -> Counter[str]:
    with fleet.api.rows.engine.connect() as conn:
        import sqlalchemy as sa

        rows = conn.execute(
            sa.text(
                "SELECT archive FROM snapshots WHERE agent_id = :a "
                "AND exit_status IN ('ok', 'warning')"
            ),
            {"a": agent_id},
        ).all()
    return Counter(r.archive for r in rows)


def mismatches(fleet) -> dict[str, dict]:
    """Per host: archives in the repository vs successful snapshots in the database."""
    ids = fleet.agent_ids()
    out = {}
    for host in fleet.hosts:
        rc, listing = fleet.agent(host, "list")
        assert rc == 0, listing
        in_repo = Counter(a["name"] for a in listing["archives"])
        in_db = db_archives(fleet, ids[host])
        if in_repo != in_db:
            out[host] = {"missing": in_repo - in_db, "extra": in_db - in_repo}
    return out


def wait_flushed(fleet, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        depths = {h: fleet.agent(h, "status")[1]["spool_depth"] for h in fleet.hosts}
        if not any(depths.values()):
            return
        assert time.monotonic() < deadline, f"spools not flushed by the daemons: {depths}"
        time.sleep(3)


@pytest.fixture(scope="module")
def outage(fleet):
    wait_flushed(fleet)
    fleet.api.server.stop()
    try:
        result = fleet.saveos("backup", "--inventory", str(fleet.inventory))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "spooled" in result.stdout, result.stdout[-3000:]
        depths = {h: fleet.agent(h, "status")[1]["spool_depth"] for h in fleet.hosts}
        assert all(d >= 1 for d in depths.values()), depths  # really spooled, not sent
    finally:
        fleet.api.server.start()
    wait_flushed(fleet)  # the daemons flush on their next heartbeat
    return depths


def test_r3_outage_loses_and_doubles_nothing(fleet, outage, figures):
    assert mismatches(fleet) == {}
    total = sum(sum(db_archives(fleet, i).values()) for i in fleet.agent_ids().values())
    figures.append(
        f"R3 API outage: {sum(outage.values())} reports spooled on {len(outage)} hosts while the "
        f"API was down, all flushed; {total} snapshots in the database = {total} archives in "
        "the repositories (0 lost, 0 doubled)"
    )


def test_r3_negative_a_replay_under_a_new_report_id_is_noticed(fleet, outage):
    host = fleet.hosts[0]
    rc, status = fleet.agent(host, "status")
    token = fleet.sh(host, "cat /etc/saveos/token").stdout.strip()
    body = snapshot_report(datetime.now(UTC), archive=status["last_archive"])
    r = httpx.post(
        fleet.api.url + "/api/v1/reports/snapshots",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        verify=fleet.api.server.verify,
    )
    assert r.status_code == 201
    try:
        found = mismatches(fleet)
        assert found[host]["extra"] == Counter({status["last_archive"]: 1}), found
    finally:
        with fleet.api.rows.engine.begin() as conn:
            import sqlalchemy as sa

            conn.execute(
                sa.text("DELETE FROM snapshots WHERE report_id = :r"), {"r": body["report_id"]}
            )
    assert mismatches(fleet) == {}
