"""`saveos status|snapshots|agents|backup --via-api` against a real API server (SQLite).

The fleet is seeded through the real admin and agent endpoints; `--at` moves the clock. One
server per module (starting one costs seconds); each test gets its own agents, decommissioned
afterwards, which takes them out of the fleet status.

Over 400 lines on purpose: every case shares that one server and its seeded fleet.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import ApiServer

from saveos_cli.app import main
from saveos_cli.commands.status import AGENT_KEYS


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


class Fleet:
    def __init__(self, server, prefix: str):
        self.server = server
        self.prefix = prefix
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        # The fleet's own clock: ages are measured from when this test seeded it.
        self.now = datetime.now(UTC)

    def n(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def provision(self, short: str, **intervals) -> None:
        name = self.n(short)
        r = self.http.post(
            "/api/v1/agents/provision",
            json={"name": name, **intervals},
            headers=self.server.admin_headers(),
        )
        assert r.status_code == 201, r.text
        self.tokens[name] = r.json()["token"]
        self.ids[name] = r.json()["id"]

    def decommission_all(self) -> None:
        for agent_id in self.ids.values():
            r = self.http.delete(f"/api/v1/agents/{agent_id}", headers=self.server.admin_headers())
            assert r.status_code == 200, r.text

    def agent(self, name: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def heartbeat(self, short: str) -> httpx.Response:
        name = self.n(short)
        return self.http.post(
            "/api/v1/agents/heartbeat",
            headers=self.agent(name),
            json={"agent_version": "0.1.0", "borg_version": "1.2.4", "os": "debian"},
        )

    def snapshot(
        self, short: str, status: str = "ok", size: int = 1000, ago_s: int = 60, **extra
    ) -> None:
        name = self.n(short)
        end = self.now - timedelta(seconds=ago_s)
        body = {
            "report_id": secrets.token_hex(8),
            "repo": "/var/lib/saveos/repo",
            "archive": f"{name}-{end:%Y-%m-%dT%H:%M:%S}" if status != "error" else "",
            "started_at": _iso(end - timedelta(seconds=5)),
            "finished_at": _iso(end),
            "duration_s": 5.0,
            "nfiles": 10,
            "original_size": size,
            "compressed_size": size // 2,
            "deduplicated_size": size // 10,
            "exit_status": status,
            "rc": {"ok": 0, "warning": 1, "error": 2}[status],
            **extra,
        }
        r = self.http.post("/api/v1/reports/snapshots", json=body, headers=self.agent(name))
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-api")
    srv = ApiServer(f"sqlite:///{tmp / 'api.db'}", tmp / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def fleet(server, monkeypatch, tmp_path, request):
    monkeypatch.delenv("SAVEOS_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.setenv("SAVEOS_API_URL", server.url)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAVEOS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SAVEOS_ADMIN_TOKEN", server.admin_token)
    f = Fleet(server, request.node.name.removeprefix("test_")[:40].replace("_", "-"))
    # web1 heartbeats rarely (never silent here), web2 every minute: at +2h web1 is overdue,
    # web2 silent.
    f.provision("web1", backup_interval_s=3600, backup_grace_s=600, heartbeat_interval_s=86400)
    f.provision("web2", backup_interval_s=3600, backup_grace_s=600, heartbeat_interval_s=60)
    for name in ("web1", "web2"):
        assert f.heartbeat(name).status_code == 200
    f.snapshot("web1", size=5000)
    f.snapshot("web2", size=3000)
    yield f
    f.decommission_all()
    f.http.close()


def saveos(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_status_json_keys_and_exit_0_when_all_ok(fleet, capsys):
    code, out, err = saveos(capsys, "status", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"generated_at", "at", "exit_code", "alarms", "agents", "totals"}
    assert doc["exit_code"] == 0 and doc["alarms"] == []
    assert [a["name"] for a in doc["agents"]] == [fleet.n("web1"), fleet.n("web2")]
    for a in doc["agents"]:
        assert tuple(a) == AGENT_KEYS
        assert a["status"] == "ok"
        assert a["last_archive"].startswith(a["name"] + "-")
        # The glossary's key, and the deprecated one beside it, with the same value.
        assert a["last_backup_result"] == a["last_snapshot_status"] == "ok"
        assert 0 <= a["last_heartbeat_age_s"] < 120
        assert 50 <= a["last_backup_age_s"] < 180
    assert doc["totals"]["agents"] == 2
    assert doc["totals"]["by_status"].get("ok") == 2
    assert doc["totals"]["original_size"] == 8000
    assert doc["totals"]["deduplicated_size"] == 800


def test_status_exit_2_when_time_passes(fleet, capsys):
    later = _iso(fleet.now + timedelta(hours=2))
    code, out, _ = saveos(capsys, "status", "--json", "--at", later)
    assert code == 2
    doc = json.loads(out)
    status = {a["name"]: a["status"] for a in doc["agents"]}
    assert status == {fleet.n("web1"): "overdue", fleet.n("web2"): "silent"}
    assert doc["alarms"] == [fleet.n("web1"), fleet.n("web2")] and doc["exit_code"] == 2
    web1 = next(a for a in doc["agents"] if a["name"] == fleet.n("web1"))
    assert 7200 <= web1["last_backup_age_s"] < 7400  # ages follow --at
    # late (past interval, within grace) is not an alarm
    code, out, _ = saveos(
        capsys, "status", "--json", "--at", _iso(fleet.now + timedelta(seconds=3700))
    )
    status = {a["name"]: a["status"] for a in json.loads(out)["agents"]}
    assert status[fleet.n("web1")] == "late"


def test_status_failing_snapshot_exits_2(fleet, capsys):
    fleet.snapshot("web2", status="error", ago_s=10)
    code, out, _ = saveos(capsys, "status", "--json")
    assert code == 2
    doc = json.loads(out)
    assert {a["name"]: a["status"] for a in doc["agents"]} == {
        fleet.n("web1"): "ok",
        fleet.n("web2"): "failing",
    }
    assert doc["alarms"] == [fleet.n("web2")]


def test_status_table_and_exports(fleet, capsys, tmp_path):
    svg, html = tmp_path / "fleet.svg", tmp_path / "fleet.html"
    code, out, _ = saveos(capsys, "status", "--svg", str(svg), "--html", str(html))
    assert code == 0
    for needle in (fleet.n("web1"), fleet.n("web2"), "ok", "2 agent(s)", "8.0 kB"):
        assert needle in out
    assert svg.read_text().startswith("<svg") and fleet.n("web1") in svg.read_text()
    assert "<html" in html.read_text().lower() and fleet.n("web2") in html.read_text()
    # JSON on stdout and an export together: stdout stays pure JSON
    code, out, _ = saveos(capsys, "status", "--json", "--svg", str(svg))
    assert json.loads(out)["exit_code"] == 0


def test_snapshots_and_unknown_host(fleet, capsys):
    fleet.snapshot("web1", size=7000, ago_s=30)
    code, out, _ = saveos(capsys, "snapshots", fleet.n("web1"), "--json")
    assert code is None or code == 0
    doc = json.loads(out)
    assert doc["host"] == fleet.n("web1") and doc["total"] == 2
    assert [s["original_size"] for s in doc["snapshots"]] == [7000, 5000]  # newest first
    code, out, err = saveos(capsys, "snapshots", "nosuchhost")
    assert code == 1
    assert "unknown host 'nosuchhost'" in err and "Traceback" not in err


def test_bad_and_agent_tokens_are_refused(fleet, capsys, monkeypatch):
    monkeypatch.setenv("SAVEOS_ADMIN_TOKEN", "adm_wrong_" + "x" * 30)
    code, _, err = saveos(capsys, "status")
    assert code == 1 and "rejected the admin token (401)" in err
    monkeypatch.setenv("SAVEOS_ADMIN_TOKEN", fleet.tokens[fleet.n("web1")])
    code, _, err = saveos(capsys, "agents", "list")
    assert code == 1 and "(403)" in err
    assert fleet.tokens[fleet.n("web1")] not in err


def test_backup_via_api_queues_jobs_agents_receive(fleet, capsys):
    code, out, _ = saveos(capsys, "backup", "--via-api", "--limit", fleet.n("web1"))
    assert code == 0 and "1 job(s) queued" in out
    jobs = fleet.heartbeat("web1").json()["jobs"]
    assert [j["kind"] for j in jobs] == ["backup"]
    assert fleet.heartbeat("web2").json()["jobs"] == []
    code, _, err = saveos(capsys, "backup", "--via-api", "--limit", fleet.n("web1") + ",ghost")
    assert code == 1 and "unknown host 'ghost'" in err


def test_agents_list_and_revoke(fleet, capsys):
    code, out, _ = saveos(capsys, "agents", "list", "--json")
    assert code in (None, 0)
    names = [a["name"] for a in json.loads(out)["agents"]]
    assert [fleet.n("web1"), fleet.n("web2")] == [n for n in names if n.startswith(fleet.prefix)]
    code, out, _ = saveos(capsys, "agents", "revoke", fleet.n("web2"))
    assert code in (None, 0) and f"revoked 1 token(s) of {fleet.n('web2')}" in out
    assert fleet.heartbeat("web2").status_code == 401
    assert fleet.heartbeat("web1").status_code == 200


def test_status_json_text_is_the_stdlib_indent_2_text():
    """report_json() takes a faster road to json.dumps(report, indent=2), never other text."""
    from saveos_cli.commands.status import report_json

    agent = dict.fromkeys(AGENT_KEYS)
    agent.update(name="web-01", id=7, status="silent", original_size=2**62, last_backup_age_s=0.1)
    report = {
        "generated_at": "2026-01-01T00:00:00Z",
        "at": None,
        "exit_code": 2,
        "alarms": ["web-01"],
        "agents": [agent, dict(agent, name="db-01", last_backup_age_s=86400.5, id=8)],
        "totals": {"agents": 2, "by_status": {"silent": 2}, "original_size": 2**63, "dedup": 0},
    }
    for case in (
        report,
        dict(report, agents=[], alarms=[], totals={"by_status": {}}),
        dict(report, alarms=["hôte-é"], agents=[dict(agent, last_archive='a"\n},{')]),
        dict(report, totals={"original_size": 2**70}),  # beyond 64 bits
        {**report, "agents": [dict(agent, last_backup_age_s=-12345678.9)]},
    ):
        assert report_json(case) == json.dumps(case, indent=2)


def test_status_json_is_the_same_from_an_older_api(fleet):
    """The API sends the rows in `--json` order with their ages; from an API that sends neither,
    nor the glossary's keys (an older server: `last_snapshot_status`, `repo_*` only), the CLI
    builds the same rows itself, and its table shows where the repository lives either way."""
    import io

    from rich.console import Console

    from saveos_cli.commands.status import render_status, status_report

    where = {"server": "repo1", "path": "/srv/saveos-repos/web1", "quota_bytes": 5_000_000,
             "used_bytes": 1_200}  # fmt: skip
    fleet.snapshot("web1", repository={"url": "/var/lib/saveos/repo", **where})
    glossary = {"last_backup_result", *(f"repository_{k}" for k in where)}
    later = fleet.now + timedelta(hours=2)
    raw = fleet.http.get(
        "/api/v1/fleet/status", params={"at": _iso(later)}, headers=fleet.server.admin_headers()
    ).json()
    mine = (fleet.n("web1"), fleet.n("web2"))
    raw["agents"] = [a for a in raw["agents"] if a["name"] in mine]
    assert [tuple(a) for a in raw["agents"]] == [AGENT_KEYS] * 2
    older = {
        **raw,
        "agents": [
            {k: v for k, v in reversed(a.items()) if not k.endswith("_age_s") and k not in glossary}
            for a in reversed(raw["agents"])
        ],
    }
    assert status_report(older, later) == status_report(raw, later)
    web1 = status_report(older, later)["agents"][0]
    assert 7200 <= web1["last_backup_age_s"] < 7400
    assert {k: web1[f"repository_{k}"] for k in where} == where
    for doc in (raw, older):
        out = Console(file=io.StringIO(), width=400)  # no cell wrapped
        render_status(out, status_report(doc, later), show_all=True)
        assert "repo1 1.2 kB / 5.0 MB" in out.file.getvalue()


def test_large_fleet_table_shows_the_worst_hosts_first():
    """Past TABLE_ROWS hosts the table holds those not ok, worst first, and says so; --all shows
    every host; the alarm line names the first few and counts the rest."""
    import io

    from rich.console import Console

    from saveos_cli.commands.status import TABLE_ROWS, render_status, status_report

    statuses = ["ok"] * 60 + ["late"] * 40 + ["silent"] * 30 + ["failing"] * 5
    agents = [
        dict.fromkeys(AGENT_KEYS) | {"name": f"h{i:03d}", "id": i, "status": status}
        for i, status in enumerate(statuses)
    ]
    raw = {"generated_at": "2026-11-25T12:00:00Z", "agents": agents, "totals": {}}
    report = status_report(raw, None)

    def rendered(show_all: bool) -> list[str]:
        out = Console(file=io.StringIO(), width=250)
        render_status(out, report, show_all)
        return out.file.getvalue().splitlines()

    lines = rendered(False)
    rows = [line.split("│")[1:3] for line in lines if line.startswith("│")]
    assert len(rows) == TABLE_ROWS == 50
    assert [s.strip() for _, s in rows] == ["silent"] * 30 + ["failing"] * 5 + ["late"] * 15
    assert rows[0][0].strip() == "h100" and rows[30][0].strip() == "h130"  # by name within one
    assert any("50 of 135 hosts" in line for line in lines)
    alarm = next(line for line in lines if line.startswith("needs attention"))
    assert alarm.startswith("needs attention (35): h100, h101,") and alarm.endswith(
        "h119 and 15 more"
    )
    every = [line for line in rendered(True) if line.startswith("│")]
    assert len(every) == 135 and not any("of 135 hosts" in line for line in rendered(True))


def test_a_locked_host_is_an_alarm_shown_after_silent_ones():
    from saveos_cli.commands.status import TABLE_ROWS, shown_agents, status_report

    statuses = ["ok"] * TABLE_ROWS + ["failing", "locked", "silent", "late"]
    agents = [
        dict.fromkeys(AGENT_KEYS) | {"name": f"h{i:03d}", "id": i, "status": status}
        for i, status in enumerate(statuses)
    ]
    report = status_report({"generated_at": "2026-11-25T12:00:00Z", "agents": agents}, None)
    assert report["exit_code"] == 2
    assert report["alarms"] == ["h050", "h051", "h052"]  # failing, locked, silent: by name
    shown = [a["status"] for a in shown_agents(report["agents"], show_all=False)]
    assert shown == ["silent", "locked", "failing", "late"]


def test_agents_list_pages_and_streams_json(fleet, capsys, monkeypatch):
    """--limit/--offset page through the API's list; --json is streamed a page at a time and is
    still exactly json.dumps(doc, indent=2); the table says what it left out."""
    from saveos_cli.commands import agents as agents_cmd

    for i in range(5):
        fleet.provision(f"extra{i}")
    code, out, _ = saveos(capsys, "agents", "list", "--json")
    assert code in (None, 0)
    whole = json.loads(out)
    assert out == json.dumps(whole, indent=2) + "\n"
    names = [a["name"] for a in whole["agents"]]
    assert whole["total"] == len(names) and names == sorted(names)
    assert {fleet.n(f"extra{i}") for i in range(5)} <= set(names)

    monkeypatch.setattr(agents_cmd, "API_PAGE", 2)  # many API pages for one listing
    code, streamed, _ = saveos(capsys, "agents", "list", "--json")
    assert streamed == out
    pages = []
    for offset in range(0, len(names), 3):
        code, page, _ = saveos(
            capsys, "agents", "list", "--json", "--limit", "3", "--offset", str(offset)
        )
        doc = json.loads(page)
        assert doc["total"] == len(names) and len(doc["agents"]) <= 3
        pages += [a["name"] for a in doc["agents"]]
    assert pages == names
    code, empty, _ = saveos(capsys, "agents", "list", "--json", "--offset", str(len(names)))
    assert json.loads(empty) == {"agents": [], "total": len(names)}

    monkeypatch.setenv("COLUMNS", "200")
    code, table, _ = saveos(capsys, "agents", "list", "--limit", "2", "--offset", "1")
    assert code in (None, 0)
    assert f"agents 2-3 of {len(names)}" in table
    assert names[1] in table and names[2] in table and names[3] not in table
    assert "--offset 3 for the next page" in table
    code, _, err = saveos(capsys, "agents", "list", "--limit", "0")


def test_a_long_table_is_drawn_as_aligned_columns_with_the_same_cells():
    """Past columns.LONG_TABLE rows `status --all` draws aligned columns instead of Rich's Table
    (which took seconds of CPU at 10,000 hosts): one line per host in name order, every column
    starting at the same place, colours only on a terminal, agent text still escaped; a
    recording console (--svg / --html) exports the same lines."""
    import io
    import re

    from rich.console import Console

    from saveos_cli.columns import LONG_TABLE
    from saveos_cli.commands.status import render_status, status_report

    n = LONG_TABLE + 50
    agents = [
        dict.fromkeys(AGENT_KEYS)
        | {
            "name": f"host-{i:04d}",
            "id": i,
            "status": "failing" if i % 7 == 0 else "ok",
            "last_archive": "evil\x1b[2J" if i == 3 else f"host-{i:04d}-archive",
            "original_size": 10**9 if i % 2 else 5,
            "reasons": ["the last backup failed"] if i % 7 == 0 else [],
        }
        for i in range(n)
    ]
    report = status_report({"generated_at": "2026-11-25T12:00:00Z", "agents": agents}, None)

    def rendered(**console) -> str:
        out = Console(file=io.StringIO(), width=120, **console)
        out.record = console.pop("record", False)
        render_status(out, report, show_all=True)
        return out.export_text() if out.record else out.file.getvalue()

    plain = rendered()
    assert "\x1b" not in plain and "│" not in plain  # piped: no colours, no box
    lines = plain.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("host "))
    rows = lines[header + 1 : header + 1 + n]
    assert [r.split()[0] for r in rows] == [a["name"] for a in agents]
    starts = {name: lines[header].index(name) for name in ("status", "original", "why")}
    for row, agent in zip(rows, agents, strict=True):
        assert row[starts["status"] :].split()[0] == agent["status"]
        # right-justified sizes end where the header ends
        end = starts["original"] + len("original")
        assert row[:end].endswith("1.0 GB" if agent["original_size"] > 5 else "5 bytes")
        assert row == row.rstrip()
    assert "evil\\x1b[2J" in rows[3]  # the agent's escape sequence is shown, not obeyed
    assert rows[7][starts["why"] :] == "the last backup failed"
    terminal = rendered(force_terminal=True, color_system="standard")
    assert re.search(r"\x1b\[1;31mfailing\x1b\[0m", terminal)
    assert "\x1b[2J" not in terminal
    assert re.sub(r"\x1b\[[0-9;]*m", "", terminal) == plain
    assert rendered(record=True) == plain
