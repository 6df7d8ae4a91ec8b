"""R11 network attacker: the fleet's API runs on HTTPS with its own CA (the role copied it to every
host). A TLS-terminating impostor on loopback with a certificate from another CA, for the same
address, gets no request from the agent, the CLI or the role; plain http:// to a non-loopback
address is refused by all three before anything is sent; and a packet capture (tshark, loopback)
of a real agent <-> API exchange and a CLI call holds none of the fleet's secrets, while the same
capture of a plain-HTTP request does show its token (the capture is not blind)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from ansible_support import playbook
from tls_support import Recorder, make_ca

pytestmark = [pytest.mark.lab, pytest.mark.pg]
OFF_LOOPBACK = "http://10.255.0.1:8000"
IMPOSTOR_CONFIG = "/etc/saveos/impostor.json"


class Capture:
    """tshark on the loopback interface, TCP to/from one port, into a pcap file. tshark also prints
    one line per packet it has taken off the socket (-P -l): the capture ends only once those
    lines stop coming, because a SIGTERM drops what dumpcap has not read yet (under load a fixed
    pause was not enough: an official CI run got an empty control capture)."""

    def __init__(self, path: Path, port: int):
        self.path, self.port = path, port
        self.log, self.lines = path.with_suffix(".log"), path.with_suffix(".txt")

    def __enter__(self) -> Capture:
        if shutil.which("tshark") is None:
            pytest.fail("tshark is not installed (.ci/run installs it)")
        with open(self.log, "wb") as log, open(self.lines, "wb") as lines:
            self.proc = subprocess.Popen(
                ["tshark", "-i", "lo", "-f", f"tcp port {self.port}", "-w", str(self.path),
                 "-P", "-l"],
                stdout=lines, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while b"Capturing on" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("tshark did not start: " + self.log.read_text(errors="replace"))
            time.sleep(0.1)
        return self

    def seen(self) -> int:
        return self.lines.read_bytes().count(b"\n")

    def __exit__(self, *exc) -> None:
        # Wait for a packet, then for 1 s without a new one (30 s at most).
        deadline, last, still = time.monotonic() + 30, -1, time.monotonic()
        while time.monotonic() < deadline:
            if (count := self.seen()) != last:
                last, still = count, time.monotonic()
            elif count and time.monotonic() - still >= 1.0:
                break
            time.sleep(0.1)
        self.proc.terminate()
        self.proc.wait(30)

    def packets(self) -> int:
        out = subprocess.run(
            ["tshark", "-r", str(self.path), "-T", "fields", "-e", "frame.number"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return len(out.stdout.split())

    def data(self) -> bytes:
        return self.path.read_bytes()


def test_r11_a_capture_of_real_exchanges_holds_no_secret(fleet, tmp_path, figures):
    secrets = fleet.secrets()
    assert fleet.api.url.startswith("https://")
    with Capture(tmp_path / "api.pcap", fleet.api.server.port) as api_cap:
        rc, beat = fleet.agent("lab1", "heartbeat")
        assert rc == 0 and beat["status"] == "ok", beat
        status = fleet.saveos("status", "--json")
        assert status.returncode in (0, 2), status.stderr
        assert json.loads(status.stdout)["agents"]
    raw = api_cap.data()
    assert api_cap.packets() > 10, "the capture of the real exchanges is empty"
    found = [name for name, value in secrets.items() if value.encode() in raw]
    assert b"Authorization" not in raw and b"/api/v1/" not in raw
    assert found == []
    # The control: the same capture, of a request in clear, shows its token.
    control = "sos_" + "c" * 43
    with Recorder() as plain, Capture(tmp_path / "plain.pcap", plain.server.server_address[1]) as c:
        httpx.get(plain.url + "/api/v1/agents/me", headers={"Authorization": f"Bearer {control}"})
    assert control.encode() in c.data()
    figures.append(
        f"R11 capture: a real agent heartbeat and a CLI status over HTTPS, {api_cap.packets()}"
        f" packets / {len(raw):,} bytes on loopback: 0 of {len(secrets)} secrets, no HTTP header"
        " in clear (control: the token of a plain-HTTP request is in its capture)"
    )


def test_r11_an_impostor_with_another_ca_gets_nothing(fleet, tmp_path, figures):
    other = make_ca(tmp_path / "other", "127.0.0.1", "localhost")
    with Recorder(tls_dir=other) as impostor:
        # The agent: its own config, pointed at the impostor.
        rewrite = (
            "python3 -c \"import json,os,sys; c=json.load(open('/etc/saveos/agent.json'));"
            f" c['api_url']='{impostor.url}';"
            f" fd=os.open('{IMPOSTOR_CONFIG}', os.O_WRONLY|os.O_CREAT|os.O_TRUNC, 0o600);"
            ' os.write(fd, json.dumps(c).encode())"'
        )
        assert fleet.sh("lab1", rewrite).returncode == 0
        try:
            rc, beat = fleet.agent("lab1", "--config", IMPOSTOR_CONFIG, "heartbeat")
        finally:
            fleet.sh("lab1", f"rm -f {IMPOSTOR_CONFIG}")
        assert rc != 0 and "CERTIFICATE_VERIFY_FAILED" in beat["message"], beat
        # The CLI, with the fleet's CA.
        cli = fleet.saveos("--api-url", impostor.url, "status")
        assert cli.returncode == 1 and "does not verify" in cli.stderr, cli.stderr
        # The role: from the controller and from the host.
        role = _deploy(fleet, SAVEOS_API_URL=impostor.url)
        assert role.returncode != 0
        assert "cannot reach the SaveOS API" in role.stdout, role.stdout[-3000:]
        handshakes = impostor.handshakes
        assert impostor.seen == [] and handshakes >= 3
    figures.append(
        f"R11 impostor (another CA, same address): agent, CLI and role refused it;"
        f" {handshakes} TLS handshakes, 0 requests, 0 tokens reached it"
    )


def test_r11_plain_http_off_loopback_is_refused_before_anything_is_sent(fleet, figures):
    config = fleet.sh(
        "lab1",
        "python3 -c \"import json; c=json.load(open('/etc/saveos/agent.json'));"
        f" c['api_url']='{OFF_LOOPBACK}'; print(json.dumps(c))\" > {IMPOSTOR_CONFIG}"
        f" && chmod 600 {IMPOSTOR_CONFIG}"
        f" && /usr/local/bin/saveos-agent --config {IMPOSTOR_CONFIG} heartbeat;"
        f" rc=$?; rm -f {IMPOSTOR_CONFIG}; exit $rc",
    )
    assert config.returncode == 2 and "in clear" in config.stdout + config.stderr
    cli = fleet.saveos("--api-url", OFF_LOOPBACK, "status")
    assert cli.returncode == 1 and "in clear" in cli.stderr
    role = _deploy(fleet, SAVEOS_API_URL=OFF_LOOPBACK)
    assert role.returncode != 0 and "http:// only to loopback" in role.stdout, role.stdout[-2000:]
    figures.append(
        f"R11 plain http:// to {OFF_LOOPBACK}: refused by the agent (exit 2), the CLI (exit 1) and"
        " the role (assert) before any connection"
    )


def _deploy(fleet, **env) -> subprocess.CompletedProcess:
    full = dict(fleet.env, **env)
    result = playbook(
        fleet.inventory, "playbooks/deploy.yml", "--limit", "lab1", env=full, timeout=900
    )
    fleet.outputs.append(result.stdout + result.stderr)
    return result
