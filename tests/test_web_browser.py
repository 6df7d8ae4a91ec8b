"""The dashboard in the distribution's Chromium without a lab: how the pages look at a desktop's
and a phone's width (the lab-based walk through every action is R13). Screenshots are kept in
test-artifacts/web_layout/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from browser_support import Shots, launch
from report_support import check_report, snapshot_report

playwright = pytest.importorskip("playwright.sync_api")


def _seed(server) -> None:
    admin = server.admin_headers()
    now = datetime.now(UTC)
    for name, days in (("web-01", 30), ("db-01", 0), ("build-7", 0)):
        r = httpx.post(server.url + "/api/v1/agents/provision",
                       json={"name": name, "labels": {"env": "prod"}}, headers=admin)  # fmt: skip
        assert r.status_code == 201, r.text
        agent = {"Authorization": f"Bearer {r.json()['token']}"}
        httpx.post(server.url + "/api/v1/agents/heartbeat", json={}, headers=agent)
        for day in range(days, 0, -1):
            body = snapshot_report(now - timedelta(days=day - 1, hours=1), archive=f"{name}-{day}",
                                   original_size=10**9 + day * 10**7)  # fmt: skip
            assert httpx.post(server.url + "/api/v1/reports/snapshots", json=body,
                              headers=agent).status_code == 201  # fmt: skip
        httpx.post(server.url + "/api/v1/reports/checks", json=check_report(now), headers=agent)
    body = snapshot_report(now - timedelta(days=3), archive="db-01-old")
    httpx.post(server.url + "/api/v1/reports/snapshots", json=body, headers=agent)


def _overflow(page) -> int:
    """How far the page is wider than the window (0: nothing sticks out)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def test_pages_fit_a_desktop_and_a_phone_and_the_charts_say_what_they_show(api_server_sqlite):
    server = api_server_sqlite
    _seed(server)
    shot = Shots("web_layout")
    with playwright.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(server.url + "/login")
            page.fill("#token", server.admin_token)
            page.click("form[action='/login'] button[type=submit]")
            page.wait_for_url("**/fleet")
            for width in (1280, 420):
                page.set_viewport_size({"width": width, "height": 900})
                for path, label in (("/fleet", "fleet"), ("/hosts/web-01", "host"),
                                    ("/jobs", "jobs"), ("/settings", "settings")):  # fmt: skip
                    page.goto(server.url + path)
                    if label == "host":
                        page.wait_for_selector("#charts[data-drawn=true]", timeout=30_000)
                        # The legends name the series, with no placeholder before a hover.
                        legends = page.locator("#charts .u-legend").all_inner_texts()
                        assert any("original" in t and "deduplicated" in t for t in legends)
                        assert not any("--" in t for t in legends), legends
                    shot(page, f"{label}-{width}")
                    assert _overflow(page) <= 0, f"{path} is wider than a {width} px window"
        finally:
            browser.close()
