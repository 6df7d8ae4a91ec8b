"""The agent's connection to the API: the requests of one run share one kept-alive connection
(one TLS handshake), a connection the server closed is reopened resuming the TLS session, and
the pinned-CA and no-redirect rules still hold on the kept connection."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from saveos_agent import reporting
from saveos_agent.api_client import ApiClient, ApiUnavailable
from saveos_agent.config import Config
from tls_support import Recorder, make_ca, redirect_to


def _token(tmp_path) -> str:
    path = tmp_path / "token"
    path.write_text("agt_" + "k" * 40 + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("transport-ca"))


def test_the_requests_of_a_run_share_one_tls_connection(tmp_path, ca):
    with Recorder(tls_dir=ca, keep_alive=True) as api:
        cfg = Config(
            path=str(tmp_path / "agent.json"), repository="/r", sources=["/"], api_url=api.url,
            token_file=_token(tmp_path),
            ca_file=str(ca / "ca.crt"),
        )  # fmt: skip
        client = reporting.api_client(cfg)
        assert reporting.api_client(cfg) is client, "one client per process and API"
        assert client.post("/api/v1/agents/heartbeat", {"a": 1})[0] == 200
        assert client.post("/api/v1/reports/snapshots", {"b": 2})[0] == 200
        assert client.get("/api/v1/agents/me")[0] == 200
        assert [s[1] for s in api.seen] == [
            "/api/v1/agents/heartbeat", "/api/v1/reports/snapshots", "/api/v1/agents/me"
        ]  # fmt: skip
        assert api.handshakes == 1, "one TLS handshake for the whole run"
        assert all(s[2]["Authorization"].startswith("Bearer agt_") for s in api.seen)


def test_a_connection_the_server_closed_is_reopened_resuming_the_session(tmp_path, ca):
    # HTTP/1.0: the server closes after every answer, as uvicorn does after its idle timeout.
    with Recorder(tls_dir=ca) as api:
        client = ApiClient(api.url, _token(tmp_path), ca_file=str(ca / "ca.crt"))
        for i in range(3):
            assert client.post("/api/v1/agents/heartbeat", {"i": i})[0] == 200
        assert len(api.seen) == 3 and api.handshakes == 3
        assert api.resumed == 2, "the second and third handshakes resume the first session"
        assert client._conn.resumed == 2


def test_threads_get_their_own_connection(tmp_path, ca):
    with Recorder(tls_dir=ca, keep_alive=True) as api:
        client = ApiClient(api.url, _token(tmp_path), ca_file=str(ca / "ca.crt"))
        errors: list = []

        def beat() -> None:
            try:
                for _ in range(5):
                    assert client.post("/api/v1/agents/heartbeat", {})[0] == 200
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=beat) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and len(api.seen) == 10
        assert api.handshakes == 2 and api.resumed <= 1


def test_threads_starting_together_share_one_transport(tmp_path, ca):
    """The transport is made lazily; threads asking at once must all get the same one (else
    each keeps a connection in a transport another thread replaced, and opens one more)."""
    client = ApiClient("https://127.0.0.1:9", _token(tmp_path), ca_file=str(ca / "ca.crt"))
    start, got = threading.Barrier(8), []

    def take() -> None:
        start.wait()
        got.append(client._transport())

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 8 and len({id(t) for t in got}) == 1


def test_kept_connection_refuses_a_redirect_and_another_ca(tmp_path, ca):
    with Recorder(tls_dir=ca, keep_alive=True, answer=redirect_to("https://127.0.0.2:1")) as api:
        client = ApiClient(api.url, _token(tmp_path), ca_file=str(ca / "ca.crt"))
        for _ in range(2):
            with pytest.raises(ApiUnavailable, match="redirect"):
                client.post("/api/v1/agents/heartbeat", {})
        assert len(api.seen) == 2
    other = make_ca(tmp_path / "other")
    with Recorder(tls_dir=other, keep_alive=True) as impostor:
        client = ApiClient(impostor.url, _token(tmp_path), ca_file=str(ca / "ca.crt"))
        for _ in range(2):  # the refused handshake leaves nothing to reuse
            with pytest.raises(ApiUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                client.post("/api/v1/agents/heartbeat", {})
        assert impostor.seen == []


def test_keep_alive_against_the_real_api(tmp_path):
    """uvicorn keeps the connection between requests and closes it after 5 s idle: the client
    notices and resumes the session on a new one."""
    from conftest import ApiServer

    api = ApiServer(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "api", tls=True).start()
    try:
        client = ApiClient(api.url, _token(tmp_path), ca_file=str(api.ca_file))
        for _ in range(3):
            assert client.get("/api/v1/agents/me")[0] == 401  # not a provisioned token
        assert (client._conn.opened, client._conn.resumed) == (1, 0)
        time.sleep(6)  # past uvicorn's keep-alive timeout
        assert client.get("/api/v1/agents/me")[0] == 401
        assert (client._conn.opened, client._conn.resumed) == (2, 1)
        # SIGTERM while the agent's connection is idle: the server shuts down by itself and
        # re-raises the signal (uvicorn waited for the TLS close_notify an idle client never
        # sends, until stop() killed it: -9)
        api.stop()
        assert api.returncode == -signal.SIGTERM, api.returncode
    finally:
        api.stop()
