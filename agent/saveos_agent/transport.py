"""How anything of SaveOS talks to the API: HTTPS verified against the fleet's own CA, plain
HTTP only to a loopback address, and never a redirect (it would resend the bearer token to
wherever the answer points). The agent, the CLI and the server's own checks use this module
(standard library only: it runs on hosts).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Optional


class InsecureUrl(ValueError):
    """A URL that would send a token in clear over a network."""


def is_loopback_host(host: Optional[str]) -> bool:
    """127.0.0.0/8, ::1 and the name localhost: traffic that never leaves the machine."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str) -> str:
    """The URL, or InsecureUrl when it is http:// to anything but loopback (or not http(s))."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InsecureUrl(f"{url!r} is not an http:// or https:// URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InsecureUrl(
            f"{url!r} is plain http:// to a non-loopback address: the token would cross the"
            " network in clear; use https:// (saveos ca init) or a loopback address"
        )
    return url


def ssl_context(cafile: Optional[str]):
    """Verification against `cafile` only when given (the fleet's pinned CA), else the system's
    trust store; hostname checked, TLS 1.2 at least."""
    import ssl

    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def opener(cafile: Optional[str]):
    """A urllib opener that verifies TLS as above and follows no redirect (a 3xx comes back as
    an HTTPError with that status, for the caller to refuse)."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
            return None

    return urllib.request.build_opener(
        NoRedirect, urllib.request.HTTPSHandler(context=ssl_context(cafile))
    )


class Connection:
    """Keep-alive HTTP/1.1 to one API for one process: the requests of a run (heartbeat, job
    fetch, reports, progress) share one connection, so one TLS handshake; a connection the
    server closed meanwhile (idle timeout) is reopened with the last TLS session, so the new
    handshake resumes instead of verifying the certificate again. One connection per thread
    (the daemon heartbeats and works on two), one session cache for all. No redirect is ever
    followed: http.client does not, and a 3xx comes back as an answer.

    Sent again once, on a fresh connection, only when a reused one turns out closed before any
    answer came back: every agent request is safe to repeat (reports carry their report_id,
    the server stores each once; a repeated heartbeat or progress update changes nothing)."""

    def __init__(self, base_url: str, cafile: Optional[str], timeout: float):
        import threading

        parts = urllib.parse.urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.context = ssl_context(cafile) if self.tls else None
        self._session = None  # the last TLS session: the next connection resumes it
        self._local = threading.local()
        # what it did, for the logs and the tests
        self.opened = 0
        self.resumed = 0

    def _connect(self):
        import http.client

        if self.tls:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
            # TCP first (no proxy, no tunnel), then TLS offering the last session
            http.client.HTTPConnection.connect(conn)
            try:
                conn.sock = self.context.wrap_socket(
                    conn.sock, server_hostname=self.host, session=self._session
                )
            except BaseException:
                conn.close()
                raise
            self.resumed += conn.sock.session_reused
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            conn.connect()
        self.opened += 1
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def request(self, method: str, path: str, body: Optional[bytes], headers: dict):
        """(status, headers, body) of one exchange; OSError or http.client.HTTPException when
        there was none."""
        import http.client
        import ssl

        conn = getattr(self._local, "conn", None)
        if conn is not None and _closed_by_peer(conn.sock):
            self.close()
            conn = None
        for attempt in (0, 1):
            reused = conn is not None
            if conn is None:
                conn = self._local.conn = self._connect()
            try:
                conn.request(method, self.prefix + path, body=body, headers=headers)
                sock = conn.sock
                resp = conn.getresponse()
                # TLS 1.3 tickets arrive after the handshake: read now, before the socket
                # is gone with an answer that closes the connection
                session = sock.session if self.tls else None
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    ssl.SSLEOFError):  # fmt: skip
                self.close()
                conn = None
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if session is not None:
                self._session = session
            if resp.will_close:
                self.close()
            return resp.status, resp.headers, raw
        raise AssertionError("unreachable")


def _closed_by_peer(sock) -> bool:
    """A kept connection the server has closed (or written to unasked): not to be reused."""
    import select
    import ssl

    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        sock.recv(1)  # b"": closed; anything else is an answer nobody asked for
        return True
    except (ssl.SSLWantReadError, BlockingIOError):
        return False  # only TLS housekeeping (a session ticket): still open
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def uses_proxy(url: str) -> bool:
    """Does the environment send this URL through a proxy (*_proxy, no_proxy)? Then requests
    go through urllib's opener, which honours it, one connection each."""
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    return bool(proxies.get(parts.scheme)) and not urllib.request.proxy_bypass(parts.hostname or "")
