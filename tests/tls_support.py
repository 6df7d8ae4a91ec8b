"""Network attackers for the TLS tests: an impostor API with a certificate from another CA, and
a server that answers every request with a redirect; both record what reached them."""

from __future__ import annotations

import http.server
import socketserver
import ssl
import threading
from pathlib import Path

from cli_support import saveos


def make_ca(directory: Path, *names: str) -> Path:
    """`saveos ca init` into `directory`: a CA and a server certificate for `names`."""
    args = ["ca", "init", "--dir", str(directory)]
    for name in names or ("127.0.0.1", "localhost"):
        args += ["--name", name]
    made = saveos(*args)
    assert made.returncode == 0, made.stdout + made.stderr
    return directory


class _Recorder(http.server.BaseHTTPRequestHandler):
    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        self.server.answer(self)

    do_GET = do_POST = do_PUT = do_DELETE = _any

    def log_message(self, *args) -> None:
        pass


class _KeepAlive(_Recorder):
    protocol_version = "HTTP/1.1"  # keeps the connection open between requests


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Recorder:
    """A loopback HTTP(S) server that records every request (method, path, headers, body) and
    every raw TLS handshake it saw (and how many resumed a session); `answer(handler)` writes
    the response. keep_alive: HTTP/1.1, the connection stays open between requests (else
    HTTP/1.0, closed after each answer)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        tls_dir: Path | None = None,
        answer=None,
        keep_alive: bool = False,
    ):
        self.server = _Server((host, 0), _KeepAlive if keep_alive else _Recorder)
        self.server.seen = []
        self.server.answer = answer or _json_ok
        self.handshakes = 0
        self.reused: list[bool] = []  # per TLS connection: did it resume a session?
        if tls_dir is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
            raw_accept = self.server.socket.accept

            def accept():
                conn, addr = raw_accept()
                self.handshakes += 1
                tls = context.wrap_socket(conn, server_side=True)
                self.reused.append(tls.session_reused)
                return tls, addr

            self.server.get_request = accept  # type: ignore[method-assign]
        self.scheme = "https" if tls_dir is not None else "http"
        self.url = f"{self.scheme}://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def resumed(self) -> int:
        return sum(self.reused)

    @property
    def seen(self) -> list:
        return self.server.seen

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json_ok(handler) -> None:
    body = b'{"agent_id": 1, "server_time": "2026-01-01T00:00:00Z", "jobs": []}'
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def redirect_to(location: str):
    def answer(handler) -> None:
        handler.send_response(307)
        handler.send_header("Location", location + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer
