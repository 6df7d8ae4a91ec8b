"""Alerts from a real host: a lab host deployed by the role stops (its namespace killed) ->
`silent` arrives once by mail and webhook; it comes back -> the recovery arrives once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml
from alert_support import Mailbox, Webhook
from ansible_support import ansible_env, playbook
from conftest import free_port, lab_net, require_root
from test_alerts import FAST, Workers
from wait_support import wait_for

from saveos_lab.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.borg]
HOST = "lab1"
HEARTBEAT_S = 5  # the role's minimum; silent after 3 missed heartbeats: 15 s


class Site:
    def __init__(self, work: Path):
        self.work = work
        self.lab = Lab(work / "lab", net=lab_net(), port=20822)
        self.mail = Mailbox(free_port())
        self.hook = Webhook(free_port())
        self.api = Workers(f"sqlite:///{work / 'api.db'}", work / "api", 1, **FAST)
        self.inventory = work / "inventory.yml"

    @property
    def env(self) -> dict[str, str]:
        return ansible_env(
            {
                "SAVEOS_API_URL": self.api.url,
                "SAVEOS_ADMIN_TOKEN": self.api.admin_token,
                "SAVEOS_ESCROW_DIR": str(self.work / "escrow"),
            }
        )

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, headers=self.api.admin_headers(), timeout=10)

    def status(self) -> str | None:
        with self.http() as http:
            agents = http.get("/api/v1/fleet/status").json()["agents"]
        return next((a["status"] for a in agents if a["name"] == HOST), None)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_root()
    work = tmp_path_factory.mktemp("alerts-lab")
    work.chmod(0o700)
    site = Site(work)
    try:
        site.lab.up(1)
        site.mail.start()
        site.hook.start()
        site.api.start()
        inventory = yaml.safe_load(site.lab.inventory_path.read_text())
        inventory["all"]["children"]["lab"]["vars"] = {
            "saveos_agent_sources": ["/etc/hostname"],
            "saveos_agent_repository": "/var/lib/saveos/repo",
            "saveos_agent_heartbeat_interval_s": HEARTBEAT_S,
        }
        site.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
        deployed = playbook(site.inventory, "playbooks/deploy.yml", env=site.env)
        assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-2000:]
        backup = site.lab.ssh(HOST, "/usr/local/bin/saveos-agent --json backup", timeout=300)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        yield site
    finally:
        site.api.stop()
        site.mail.stop()
        site.hook.stop()
        site.lab.down()


def test_stopped_host_is_notified_silent_once_and_its_recovery_once(site):
    with site.http() as http:
        # The role labels the host with its inventory groups: `group=lab` routes, `group=db` not.
        labels = http.get(f"/api/v1/agents/by-name/{HOST}").json()["labels"]
        assert labels["groups"] == "lab", labels
        for url, selector in (
            (site.mail.url, {}),
            (site.hook.url(), {"group": "lab"}),
            (site.hook.url("/db-team"), {"group": "db"}),
        ):
            body = {"url": url, "labels": selector}
            assert http.post("/api/v1/alerts/channels", json=body).status_code == 201
    wait_for(lambda: site.status() == "ok", 30, f"{HOST} ok after its backup")
    time.sleep(1.0)
    assert site.mail.messages == [] and site.hook.posts == []

    host = next(h for h in site.lab.hosts() if h.name == HOST)
    stopped = time.monotonic()
    os.kill(host.sshd_pid, signal.SIGKILL)  # PID 1 of the host: the agent dies with it
    wait_for(lambda: site.mail.messages and site.hook.posts, 30, "the silent notices")
    took = time.monotonic() - stopped
    assert site.mail.subjects() == [f"SaveOS: {HOST} is silent"]
    body = site.hook.posts[0]["message"]
    assert f"Host: {HOST}" in body and "Status: silent (was ok)" in body
    assert f"(expected every {HEARTBEAT_S}s)" in body and f"({HOST}-" in body  # last archive

    site.lab.up(1)  # the host boots again; its agent is started as a reboot would
    started = site.lab.ssh(HOST, "/opt/saveos/supervise ensure", timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: len(site.mail.messages) == 2 and len(site.hook.posts) == 2, 30, "recovery")
    time.sleep(2.0)  # ten more evaluator passes: nothing more
    assert site.mail.subjects() == [f"SaveOS: {HOST} is silent", f"SaveOS: {HOST} recovered (ok)"]
    assert [p["title"] for p in site.hook.posts] == site.mail.subjects()
    assert {p["path"] for p in site.hook.posts} == {"/hook/s3cr3t-token"}  # none for group=db
    print(f"alerts lab: host killed -> silent notice in {took:.1f}s (heartbeat {HEARTBEAT_S}s)")
