"""A small JSON client for the SaveOS API (http.client, bearer token read from the token file).

HTTPS is verified against the fleet's CA (config ca_file) only, http:// is taken only to
loopback, and a redirect is an answer to refuse, never followed (transport.py). One client
keeps one connection open for all the requests of a run (reporting.api_client shares it)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Optional, Tuple

from saveos_agent import __version__, logsetup
from saveos_agent.config import check_private
from saveos_agent.errors import AgentError

log = logging.getLogger("saveos_agent.api")


class ApiUnavailable(Exception):
    """The API did not answer (network error, timeout, 5xx): try again later."""


class ApiClient:
    def __init__(
        self, base_url: str, token_file: str, timeout: float = 15.0, ca_file: Optional[str] = None
    ):
        from saveos_agent.transport import InsecureUrl, check_api_url

        try:
            self.base_url = check_api_url(base_url.rstrip("/"))
        except InsecureUrl as exc:
            raise AgentError(f"api_url: {exc}") from None
        self.token_file = token_file
        self.timeout = timeout
        self.ca_file = ca_file
        self._conn = None  # kept open across requests (transport.Connection)
        self._conn_lock = threading.Lock()  # the daemon's two threads share the client

    def _token(self) -> str:
        check_private(self.token_file, "token_file")
        try:
            with open(self.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise AgentError(f"token_file: cannot read {self.token_file}: {exc}") from None
        if not token:
            raise AgentError(f"token_file: {self.token_file} is empty")
        logsetup.add_secret(token)
        return token

    def _transport(self):
        from saveos_agent.transport import Connection, uses_proxy

        # Under a lock: two threads each making one would each keep a connection in a transport
        # the other then replaced, and open a third (a handshake the CI saw under load).
        with self._conn_lock:
            if self._conn is None:
                try:
                    if uses_proxy(self.base_url):
                        self._conn = _UrllibTransport(self.base_url, self.ca_file, self.timeout)
                    else:
                        self._conn = Connection(self.base_url, self.ca_file, self.timeout)
                except OSError as exc:  # ssl.SSLError is one
                    raise AgentError(f"ca_file: cannot load {self.ca_file}: {exc}") from None
            return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def request(self, method: str, path: str, body: Optional[Any] = None) -> Tuple[int, Any]:
        """(status, parsed JSON) for any HTTP answer below 500; ApiUnavailable otherwise."""
        # imported here: http.client and ssl cost more CPU than the rest of the agent's
        # start-up, and a backup without an API never needs them
        import http.client

        conn = self._transport()
        data = json.dumps(body).encode() if body is not None else None
        headers = {
            "Authorization": "Bearer " + self._token(),
            "Accept": "application/json",
            "User-Agent": f"saveos-agent/{__version__}",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            status, answer_headers, raw = conn.request(method, path, data, headers)
        except (OSError, http.client.HTTPException) as exc:  # timeouts, TLS refusals too
            reason = getattr(exc, "reason", None)  # urllib's URLError wraps the cause
            if not isinstance(reason, BaseException):
                reason = exc
            raise ApiUnavailable(f"API {self.base_url} unreachable: {reason}") from None
        if 300 <= status < 400:
            # Not followed: the token would go to wherever the answer points.
            where = answer_headers.get("Location", "?")
            raise ApiUnavailable(
                f"API {method} {path} answered a redirect ({status} to {where}); not followed"
            )
        if status >= 500:
            raise ApiUnavailable(f"API {method} {path} answered {status}")
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = {"detail": raw[:200].decode("utf-8", "replace")}
        log.debug("%s %s -> %d", method, path, status)
        return status, parsed

    def post(self, path: str, body: Any) -> Tuple[int, Any]:
        return self.request("POST", path, body)

    def get(self, path: str) -> Tuple[int, Any]:
        return self.request("GET", path)


class _UrllibTransport:
    """Through the environment's proxy (urllib's opener): a connection per request."""

    def __init__(self, base_url: str, ca_file: Optional[str], timeout: float):
        from saveos_agent.transport import opener

        self.base_url, self.timeout = base_url, timeout
        self._opener = opener(ca_file)

    def close(self) -> None:
        pass

    def request(self, method: str, path: str, body: Optional[bytes], headers: dict):
        import urllib.error
        import urllib.request

        # base_url is validated as http(s) by config
        req = urllib.request.Request(self.base_url + path, body, headers, method=method)  # noqa: S310
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()
