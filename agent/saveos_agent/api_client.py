"""A small JSON client for the SaveOS API (urllib, bearer token read from the token file).

HTTPS is verified against the fleet's CA (config ca_file) only, http:// is taken only to
loopback, and a redirect is an answer to refuse, never followed (transport.py)."""

from __future__ import annotations

import json
import logging
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
        self._opener = None

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

    def request(self, method: str, path: str, body: Optional[Any] = None) -> Tuple[int, Any]:
        """(status, parsed JSON) for any HTTP answer below 500; ApiUnavailable otherwise."""
        # imported here: urllib.request pulls in http.client and ssl, which cost more CPU than
        # the rest of the agent's start-up, and a backup without an API never needs them
        import socket
        import ssl
        import urllib.error
        import urllib.request

        from saveos_agent.transport import opener

        if self._opener is None:
            try:
                self._opener = opener(self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise AgentError(f"ca_file: cannot load {self.ca_file}: {exc}") from None

        data = json.dumps(body).encode() if body is not None else None
        # base_url is validated as http(s) by config
        req = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        req.add_header("Authorization", "Bearer " + self._token())
        req.add_header("Accept", "application/json")
        req.add_header("User-Agent", f"saveos-agent/{__version__}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
            if 300 <= status < 400:
                # Not followed: the token would go to wherever the answer points.
                where = exc.headers.get("Location", "?")
                raise ApiUnavailable(
                    f"API {method} {path} answered a redirect ({status} to {where}); not followed"
                ) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnavailable(f"API {self.base_url} unreachable: {reason}") from None
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
