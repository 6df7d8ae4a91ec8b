"""TLS with the fleet's own CA: `saveos ca`, the server on HTTPS, and the agent and CLI verifying
against the pinned CA only, refusing http:// off loopback and never following a redirect."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import cli_support
import httpx
import pytest
from conftest import REPO_ROOT, ApiServer
from saveos_agent.api_client import ApiClient, ApiUnavailable
from saveos_agent.config import validate
from saveos_agent.errors import AgentError
from tls_support import Recorder, make_ca, redirect_to


def saveos(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cli_support.saveos(*args, env=dict(os.environ, **(env or {})))


@pytest.fixture(scope="module")
def https_api(tmp_path_factory):
    server = ApiServer(
        f"sqlite:///{tmp_path_factory.mktemp('tls-db') / 'api.db'}",
        tmp_path_factory.mktemp("tls-api"),
        tls=True,
    ).start()
    yield server
    server.stop()


def token_file(tmp_path, token: str) -> str:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def test_ca_init_and_renew(tmp_path):
    tls = tmp_path / "tls"
    r = saveos("ca", "init", "--dir", str(tls), "--name", "api.example", "-n", "10.0.0.5", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["names"] == ["api.example"] and info["addresses"] == ["10.0.0.5"]
    for name, mode in (("ca.key", 0o600), ("server.key", 0o600), ("ca.crt", 0o644)):
        assert stat.S_IMODE((tls / name).stat().st_mode) == mode, name
    # Renewal: one command, the same CA (the hosts keep trusting it), a new certificate.
    old_cert = (tls / "server.crt").read_bytes()
    r = saveos("ca", "renew", "--dir", str(tls), "--json")
    renewed = json.loads(r.stdout)
    assert r.returncode == 0 and renewed["ca_sha256"] == info["ca_sha256"]
    assert renewed["names"] == ["api.example"] and (tls / "server.crt").read_bytes() != old_cert
    # A new CA is a separate, explicit step.
    r = saveos("ca", "init", "--dir", str(tls), "--new-ca", "--name", "api.example", "--json")
    assert json.loads(r.stdout)["ca_sha256"] != info["ca_sha256"]
    bad = saveos("ca", "init", "--dir", str(tls), "--name=-rf", "--name", "a b")
    assert bad.returncode == 1 and "neither a DNS name nor an IP address" in bad.stderr


def test_server_serves_https_and_refuses_plain_http_off_loopback(https_api, tmp_path):
    assert https_api.url.startswith("https://")
    r = httpx.get(https_api.url + "/health", verify=https_api.verify)
    assert r.status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(https_api.url.replace("https", "http") + "/health")  # no plain HTTP there
    env = {"SAVEOS_DATA_DIR": str(tmp_path / "plain"), "SAVEOS_ADMIN_TOKEN": "adm_" + "x" * 40}
    refused = saveos("server", "--host", "0.0.0.0", "--port", "1", env=env)
    assert refused.returncode == 1 and "refusing to serve plain HTTP on 0.0.0.0" in refused.stderr


def test_the_server_hands_out_one_tls13_session_ticket(https_api):
    """One ticket per handshake (saveos_cli.tls.server_context; OpenSSL's default is two):
    what an agent needs to resume its next connection, and no more crypto and bytes."""
    host_port = https_api.url.removeprefix("https://")
    r = subprocess.run(
        ["openssl", "s_client", "-connect", host_port, "-CAfile", str(https_api.ca_file),
         "-verify_return_error", "-quiet", "-msg"],
        input=b"GET /livez HTTP/1.0\r\n\r\n", capture_output=True, timeout=60,
    )  # fmt: skip
    seen = r.stdout + r.stderr
    assert b"HTTP/1.1 200" in seen and b"TLS 1.3" in seen, seen[-2000:]
    assert seen.count(b"NewSessionTicket") == 1, seen[-2000:]


def test_agent_and_cli_verify_against_the_pinned_ca_only(https_api, tmp_path):
    token = https_api.admin_token
    # The right CA: the agent client reaches the API (an admin token gets its 403 answer).
    good = ApiClient(https_api.url, token_file(tmp_path, token), ca_file=str(https_api.ca_file))
    status, _ = good.get("/api/v1/agents/me")
    assert status == 403
    # The system trust store does not know our CA: refused, nothing sent.
    with pytest.raises(ApiUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        ApiClient(https_api.url, token_file(tmp_path, token)).get("/api/v1/agents/me")
    # An impostor with a certificate from another CA for the very same name.
    other = make_ca(tmp_path / "other")
    with Recorder(tls_dir=other) as impostor:
        client = ApiClient(
            impostor.url, token_file(tmp_path, token), ca_file=str(https_api.ca_file)
        )
        with pytest.raises(ApiUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            client.post("/api/v1/agents/heartbeat", {})
        env = {"SAVEOS_CA_FILE": str(https_api.ca_file), "SAVEOS_ADMIN_TOKEN": token}
        cli = saveos("--api-url", impostor.url, "status", env=env)
        assert cli.returncode == 1 and "does not verify" in cli.stderr
        assert impostor.handshakes >= 2 and impostor.seen == []  # no request got through
    env = {"SAVEOS_CA_FILE": str(https_api.ca_file), "SAVEOS_ADMIN_TOKEN": token}
    ok = saveos("--api-url", https_api.url, "status", "--json", env=env)
    assert ok.returncode == 0, ok.stderr


def test_plain_http_off_loopback_is_refused_everywhere(tmp_path):
    for url in ("http://10.1.2.3:8000", "http://backup.example.com", "http://[2001:db8::1]:80"):
        with pytest.raises(AgentError, match="in clear"):
            ApiClient(url, "/nonexistent")
        data = {"repository": "/r", "sources": ["/"], "api_url": url, "token_file": "/t",
                "passphrase_file": "/p"}  # fmt: skip
        with pytest.raises(AgentError, match="in clear"):
            validate(data, "agent.json", check_paths=False)
        r = saveos("--api-url", url, "status", env={"SAVEOS_ADMIN_TOKEN": "adm_" + "x" * 40})
        assert r.returncode == 1 and "in clear" in r.stderr
    # Loopback stays allowed (the lab, the tests, a TLS proxy on the same host).
    for url in ("http://127.0.0.1:8000", "http://127.0.16.5", "http://localhost:1", "http://[::1]"):
        ApiClient(url, "/nonexistent")


def test_no_redirect_is_followed_with_the_token(tmp_path):
    token = "sos_" + "r" * 43
    with (
        Recorder(host="127.0.0.2") as elsewhere,
        Recorder(answer=redirect_to(elsewhere.url)) as api,
    ):
        client = ApiClient(api.url, token_file(tmp_path, token))
        with pytest.raises(ApiUnavailable, match="redirect"):
            client.post("/api/v1/agents/heartbeat", {})
        cli = saveos("--api-url", api.url, "status", env={"SAVEOS_ADMIN_TOKEN": token})
        assert cli.returncode == 1 and "redirect" in cli.stderr
        assert len(api.seen) == 2 and elsewhere.seen == []


def test_secret_files_of_another_owner_are_refused(tmp_path):
    from saveos_agent.config import check_private

    path = tmp_path / "token"
    path.write_text("sos_x\n")
    path.chmod(0o600)
    check_private(str(path), "token_file")
    os.chown(path, 4321, 4321)
    with pytest.raises(AgentError, match="owned by uid 4321"):
        check_private(str(path), "token_file")
    r = saveos("status", env={"SAVEOS_ADMIN_TOKEN_FILE": str(path), "SAVEOS_ADMIN_TOKEN": ""})
    assert r.returncode == 1 and "owned by uid 4321" in r.stderr


def test_ansible_control_sockets_are_not_in_a_world_writable_directory():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "ansible.cfg")
    directory = os.path.expanduser(cfg["ssh_connection"]["control_path_dir"])
    parent = os.path.dirname(directory.rstrip("/"))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    # Every existing ancestor is writable by its owner only (not /tmp, not /var/tmp).
    probe = parent
    while True:
        assert not os.stat(probe).st_mode & stat.S_IWOTH, f"{probe} is world-writable"
        if probe == "/":
            break
        probe = os.path.dirname(probe)


def test_the_sqlite_database_is_private(tmp_path):
    from saveos_api.db import Database

    os.umask(0o022)
    db = Database(f"sqlite:///{tmp_path / 'data' / 'saveos.db'}")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
    db.dispose()
    for name in os.listdir(tmp_path / "data"):
        mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))
