"""R13 the web dashboard in a real browser: Playwright driving the distribution's Chromium
against `saveos server` on PostgreSQL and the deployed lab hosts.

One operator's session, in order: log in, see the fleet, open a host, queue a backup and
watch it finish (updated in place), browse the new archive (each folder is a `list` job the
agent runs), restore one file into a target directory and check its sha256 on the host,
restore again into that now non-empty target (refused, file unchanged), bad input, CSRF, an
expired session, log out. Screenshots: test-artifacts/dashboard/ (SAVEOS_TEST_ARTIFACTS).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from browser_support import Shots, launch

from acceptance.conftest import SOURCES

pytestmark = [pytest.mark.lab, pytest.mark.pg, pytest.mark.borg]

HOST = "lab1"
SEED_DIR = f"{SOURCES}/r13"
TARGET = "/var/tmp/r13-restore"
JOB_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def browser(fleet):
    from playwright.sync_api import sync_playwright

    server = fleet.api.server
    cert = server.ca_file.parent / "server.crt" if server.url.startswith("https") else None
    with sync_playwright() as playwright:
        chromium = launch(playwright, trust_cert=cert)
        yield chromium
        chromium.close()


def _http(fleet, context=None) -> httpx.Client:
    """The API as a client outside the browser (verifying the fleet's CA), with the browser
    context's session cookie when given: forged requests with a real session."""
    cookies = {}
    if context is not None:
        cookies = {
            c["name"]: c["value"] for c in context.cookies() if c["name"] == "saveos_session"
        }
    return httpx.Client(
        base_url=fleet.api.url, verify=fleet.api.server.verify, cookies=cookies, timeout=30
    )


@pytest.fixture(scope="module")
def seeded(fleet):
    """A file only this test writes, and its sha256 on the host."""
    content = secrets.token_hex(4096)
    r = fleet.sh(
        HOST,
        f"rm -rf {SEED_DIR} {TARGET} && mkdir -p {SEED_DIR}/nested && "
        f"printf %s {content} > {SEED_DIR}/file.txt && echo other > {SEED_DIR}/nested/x && "
        f"sha256sum {SEED_DIR}/file.txt",
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()[0]


def _jobs(fleet) -> int:
    return fleet.api.rows.count("jobs")


def _wait_state(page, state: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#job-state")).to_have_text(state, timeout=JOB_TIMEOUT_MS)


def _open_folder(page, name: str) -> None:
    from playwright.sync_api import expect

    page.locator("button.dir", has_text=re.compile(rf"^{re.escape(name)}/$")).click()
    # The agent lists it on its next heartbeat; htmx reloads the page when the listing is in.
    expect(page.locator("#tree")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#path")).to_contain_text(name)


def test_operator_session_end_to_end(fleet, browser, seeded):
    from playwright.sync_api import expect

    shot = Shots("dashboard")
    # The fleet's API is on HTTPS with its own CA: the browser fixture pins its certificate.
    context = browser.new_context(base_url=fleet.api.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Script errors, and any static file (htmx, uPlot, CSS) that fails to load.
    page.on(
        "response",
        lambda r: "/static/" in r.url and r.status >= 400 and errors.append(f"{r.status} {r.url}"),
    )

    # Log in: the token is exchanged for an HttpOnly session cookie.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?reason=login"))
    shot(page, "login")
    page.fill("#token", fleet.api.server.admin_token)
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/fleet$"))
    (cookie,) = [c for c in context.cookies() if c["name"] == "saveos_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["secure"] == fleet.api.url.startswith("https://")  # Secure under TLS
    assert cookie["value"] != fleet.api.server.admin_token

    # The fleet: the same counts as the API's fleet status, one row per host with a reason.
    status = _http(fleet).get("/api/v1/fleet/status", headers=fleet.api.admin).json()
    for name, count in status["totals"]["by_status"].items():
        expect(page.locator(f"a.count[data-status={name}] b")).to_have_text(str(count))
    for host in fleet.hosts:
        expect(page.locator(f"tr[data-host={host}] td.reason")).not_to_be_empty()
    shot(page, "fleet")

    # A host, then a backup queued from its page and followed until it finishes.
    page.click(f"tr[data-host={HOST}] a")
    expect(page.locator("h1")).to_contain_text(HOST)
    expect(page.locator("#reason")).not_to_be_empty()
    shot(page, "host")
    page.click("#queue-backup")
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    backup_job = int(page.url.rsplit("/", 1)[1])
    page.evaluate("window.__not_reloaded = true")
    _wait_state(page, "succeeded")
    assert page.evaluate("window.__not_reloaded === true"), (
        "the job page reloaded instead of updating"
    )
    archive = page.locator("#job-result dd[data-key=archive]").inner_text().strip()
    assert archive.startswith(f"{HOST}-"), archive
    shot(page, "backup-finished")
    job = _http(fleet).get(f"/api/v1/jobs/{backup_job}", headers=fleet.api.admin).json()
    assert job["state"] == "succeeded" and job["requested_by"].endswith("(dashboard)")

    # The host page now has the snapshot in its table and its charts.
    page.goto(f"/hosts/{HOST}")
    expect(page.locator("#snapshots")).to_contain_text(archive)
    expect(page.locator("#charts[data-drawn=true] canvas").first).to_be_visible()
    shot(page, "host-after-backup")

    # Restore: pick the archive, browse down to the seeded folder (a `list` job per folder).
    page.click("#restore")
    page.locator(f"tr[data-archive='{archive}'] button.browse").click()
    expect(page.locator("#tree")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    for part in SEED_DIR.strip("/").split("/"):
        _open_folder(page, part)
    folder_url = page.url
    row = page.locator("tr[data-name='file.txt']")
    expect(row).to_contain_text("8.2 kB")  # 8,192 bytes of hex, with its mtime beside it
    expect(page.locator("tr[data-name='nested'] td").nth(2)).to_have_text("folder")
    shot(page, "browse")
    row.locator("input[type=checkbox]").check()
    page.fill("#target", TARGET)
    page.click("#restore-selected")
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    _wait_state(page, "succeeded")
    shot(page, "restore-finished")
    restored = fleet.sh(HOST, f"sha256sum {TARGET}{SEED_DIR}/file.txt; ls -A {TARGET}{SEED_DIR}")
    assert restored.returncode == 0, restored.stderr
    digest, _, listing = restored.stdout.partition("\n")
    assert digest.split()[0] == seeded and listing.split() == ["file.txt"]

    # The same restore again: the target exists and is not empty, so the agent refuses it.
    page.goto(folder_url)
    page.locator("tr[data-name='file.txt'] input[type=checkbox]").check()
    page.fill("#target", TARGET)
    page.click("#restore-selected")
    _wait_state(page, "failed")
    expect(page.locator("#job-error")).to_contain_text("not an empty directory")
    shot(page, "restore-refused")
    again = fleet.sh(HOST, f"sha256sum {TARGET}{SEED_DIR}/file.txt")
    assert again.stdout.split()[0] == seeded

    # Bad input: an unknown host, archive or path gets a clear page, and queues nothing.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    before = _jobs(fleet)
    page.goto("/hosts/no-such-host")
    expect(page.locator(".error")).to_contain_text("There is no host named 'no-such-host'")
    shot(page, "unknown-host")
    http = _http(fleet, context)
    r = http.post(f"/hosts/{HOST}/browse", data={"archive": f"{HOST}-1999", "csrf_token": csrf})
    assert r.status_code == 404 and "no successful archive named" in r.text
    assert _jobs(fleet) == before
    # A path the archive does not hold: the agent's listing says so, on the page.
    r = http.post(
        f"/hosts/{HOST}/browse",
        data={"archive": archive, "path": "srv/no-such-folder", "csrf_token": csrf},
    )
    assert r.status_code == 303
    page.goto(r.headers["location"])
    expect(page.locator("#listing-error")).to_contain_text(
        "/srv/no-such-folder is not in archive", timeout=JOB_TIMEOUT_MS
    )
    shot(page, "unknown-path")

    # CSRF: the same action without the token, or with another, is refused; nothing queued.
    before = _jobs(fleet)
    for form in ({"kind": "backup"}, {"kind": "backup", "csrf_token": "f" * 64}):
        r = http.post(f"/hosts/{HOST}/jobs", data=form)
        assert r.status_code == 403 and "CSRF" in r.text
    assert _jobs(fleet) == before

    # The jobs page lists what ran, finished, with results.
    page.goto("/jobs")
    expect(page.locator(f"tr[data-job='{backup_job}'][data-state=succeeded]")).to_be_visible()
    shot(page, "jobs")
    page.goto("/settings")
    expect(page.locator("#tokens")).to_contain_text("admin")
    if fleet.api.url.startswith("https://"):
        expect(page.locator("#tls")).to_contain_text("on (HTTPS)")
        expect(page.locator("#tls")).to_contain_text("valid until")
    assert fleet.api.server.admin_token not in page.content()
    shot(page, "settings")

    # An expired session: the next page asks to log in again, saying why.
    with fleet.api.rows.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE web_sessions SET expires_at = :t WHERE revoked_at IS NULL"),
            {"t": datetime.now(UTC) - timedelta(seconds=1)},
        )
    page.goto(f"/hosts/{HOST}")
    expect(page.locator(".note")).to_contain_text("Your session expired")
    shot(page, "expired")

    # Log in again, log out: the cookie no longer opens anything.
    page.fill("#token", fleet.api.server.admin_token)
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(re.compile(rf"/hosts/{HOST}$"))
    page.click("#logout")
    expect(page.locator(".note")).to_contain_text("You are logged out")
    page.goto("/fleet")
    expect(page).to_have_url(re.compile(r"/login"))
    shot(page, "logged-out")
    assert not errors, errors
    context.close()


def test_reading_pages_and_the_archive_browser_work_without_javascript(fleet, browser):
    """JavaScript off: the same pages render, forms post, waiting pages refresh themselves."""
    from playwright.sync_api import expect

    shot = Shots("dashboard-nojs")
    context = browser.new_context(
        base_url=fleet.api.url,
        java_script_enabled=False,
        viewport={"width": 1400, "height": 900},
    )
    page = context.new_page()
    page.goto("/fleet")
    page.fill("#token", fleet.api.server.admin_token)
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator("tr[data-host=lab2]")).to_be_visible()
    page.select_option("select[name=status]", "ok")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"status=ok"))
    shot(page, "fleet-filtered")
    page.goto("/hosts/lab1")
    expect(page.locator("#snapshots tbody tr").first).not_to_contain_text("No snapshot")
    expect(page.locator("#charts canvas")).to_have_count(0)  # no charts, the table instead
    shot(page, "host")
    page.click("#restore")
    page.locator("#archives button.browse").first.click()
    # The waiting page carries <meta http-equiv=refresh> in <noscript>: it reloads until the
    # agent's listing is in.
    expect(page.locator("#tree")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    shot(page, "browse")
    page.goto("/jobs")
    expect(page.locator("#jobs-live")).to_contain_text("list")
    context.close()


def test_a_read_token_sees_the_fleet_but_cannot_act(fleet, browser):
    """A `read` operator token: pages without any action control, and the action refused
    even when posted by hand with the session's own CSRF token."""
    from playwright.sync_api import expect

    shot = Shots("dashboard-read")
    with _http(fleet) as http:
        made = http.post(
            "/api/v1/tokens", json={"name": "r13-reader", "scope": "read"}, headers=fleet.api.admin
        )
    assert made.status_code == 201, made.text
    context = browser.new_context(base_url=fleet.api.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto("/fleet")
    page.fill("#token", made.json()["token"])
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator(".who")).to_contain_text("r13-reader read")
    expect(page.locator("#queue-label")).to_have_count(0)
    page.goto(f"/hosts/{HOST}")
    expect(page.locator("#snapshots")).to_be_visible()
    for control in ("#queue-backup", "#queue-check", "#queue-drill", "#restore"):
        expect(page.locator(control)).to_have_count(0)
    shot(page, "host-read-only")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    before = _jobs(fleet)
    with _http(fleet, context) as http:
        r = http.post(f"/hosts/{HOST}/jobs", data={"kind": "backup", "csrf_token": csrf})
    assert r.status_code == 403 and "has the read scope" in r.text
    assert _jobs(fleet) == before
    context.close()
