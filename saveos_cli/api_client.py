"""A small client for the SaveOS HTTP API (saveos_api/API.md) that speaks in SaveOSErrors."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from http.client import HTTPException
from typing import Any

import orjson

from saveos_cli.errors import SaveOSError

SERVER_HINT = (
    "Start it with `saveos server`, or point the CLI at it with --api-url / SAVEOS_API_URL."
)


class ApiClient:
    """On the standard library (urllib honours the *_proxy variables as httpx did): an HTTP
    library costs the CLI more to import (0.1-0.3 s with what it pulls in) than a
    `saveos status` needs for all the rest of its start."""

    def __init__(
        self, base_url: str, token: str, timeout: float = 15.0, ca_file: str | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = timeout
        self._ca_file = ca_file
        self._opener = None

    def close(self) -> None:
        pass  # a connection per request; nothing is kept open

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, params: dict | None, body: Any):
        """(status, body, reason) of one exchange; SaveOSError when there was none."""
        # https:// verified against the fleet's CA, http:// only to loopback, no redirects:
        # the agent's own transport rules (saveos_agent/transport.py).
        from saveos_agent.transport import InsecureUrl, check_api_url, opener

        try:
            check_api_url(self.base_url)
        except InsecureUrl as exc:
            raise SaveOSError(f"the API URL {exc}.") from None
        if self._opener is None:
            try:
                self._opener = opener(self._ca_file)
            except OSError as exc:  # ssl.SSLError is one
                raise SaveOSError(f"cannot load the CA file {self._ca_file}: {exc}.") from None
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data, headers, method=method)  # noqa: S310 - http(s)
        try:
            with self._opener.open(request, timeout=self._timeout) as resp:
                return resp.status, resp.read(), resp.reason
        except urllib.error.HTTPError as exc:  # 3xx/4xx/5xx: an answer, judged by the caller
            try:
                return exc.code, exc.read(), str(exc.reason or "")
            finally:
                exc.close()
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, BaseException) else exc
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise SaveOSError(
                    f"the API at {self.base_url} presented a certificate that does not verify"
                    f" against {self._ca_file or 'the system trust store'}: "
                    f"{reason.verify_message}; nothing was sent.",
                    hint="Point SAVEOS_CA_FILE at the fleet's CA (saveos ca init made it).",
                ) from None
            raise self._unreachable(reason) from exc
        except (OSError, HTTPException) as exc:  # timed out, reset or garbled mid-answer
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> SaveOSError:
        if isinstance(exc, TimeoutError):
            return SaveOSError(
                f"the SaveOS API at {self.base_url} did not answer in time.", hint=SERVER_HINT
            )
        return SaveOSError(
            f"cannot reach the SaveOS API at {self.base_url} ({type(exc).__name__}).",
            hint=SERVER_HINT,
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str = "",
        params: dict | None = None,
        json: Any = None,  # shadows the module here; callers pass json= as with httpx
    ) -> Any:
        status, body, reason = self._send(method, path, params, json)
        if 300 <= status < 400:
            raise SaveOSError(
                f"the API at {self.base_url} answered {method} {path} with a redirect ({status});"
                " not followed (it would resend the token elsewhere)."
            )
        if status == 401:
            raise SaveOSError(
                f"the API at {self.base_url} rejected the admin token (401): "
                f"{_detail(body, reason)}.",
                hint="Check SAVEOS_ADMIN_TOKEN or the token file it came from.",
            )
        if status == 403:
            raise SaveOSError(
                f"the token is not allowed to do this (403): {_detail(body, reason)}."
            )
        if status == 404 and what:
            raise SaveOSError(f"unknown host {what!r}: no agent with that name is registered.")
        if status >= 400:
            raise SaveOSError(
                f"the API refused {method} {path} ({status}): {_detail(body, reason)}."
            )
        try:
            return orjson.loads(body)
        except ValueError as exc:
            raise SaveOSError(f"the API answered {method} {path} with something not JSON.") from exc

    # --- admin endpoints -------------------------------------------------------------------
    def fleet_status(self, at: datetime | None = None) -> dict:
        params = {"at": at.isoformat()} if at else None
        return self._request("GET", "/api/v1/fleet/status", params=params)

    def agents(self) -> list[dict]:
        return self._request("GET", "/api/v1/agents")["agents"]

    def agents_page(self, limit: int, offset: int = 0) -> dict:
        """{"agents": [...], "total": N}: `limit` agents by name from `offset`."""
        return self._request("GET", "/api/v1/agents", params={"limit": limit, "offset": offset})

    def agent_by_name(self, name: str) -> dict:
        return self._request(
            "GET", f"/api/v1/agents/by-name/{urllib.parse.quote(name, safe='')}", what=name
        )

    def snapshots(self, agent_id: int, limit: int = 50, offset: int = 0) -> dict:
        return self._request(
            "GET", f"/api/v1/agents/{agent_id}/snapshots", params={"limit": limit, "offset": offset}
        )

    def record_escrow_proof(self, agent_id: int, proof: dict) -> dict:
        return self._request("POST", f"/api/v1/agents/{agent_id}/escrow", json=proof)

    def record_maintenance(self, agent_id: int, run: dict) -> dict:
        return self._request("POST", f"/api/v1/agents/{agent_id}/maintenance", json=run)

    def record_server_offsite(self, agent_id: int, report: dict) -> dict:
        return self._request("POST", f"/api/v1/agents/{agent_id}/offsite", json=report)

    def maintenance_state(self, agent_id: int, repository: str | None = None) -> dict:
        params = {"repository": repository} if repository else None
        return self._request("GET", f"/api/v1/agents/{agent_id}/maintenance/state", params=params)

    def revoke_tokens(self, agent_id: int) -> int:
        return self._request("POST", f"/api/v1/agents/{agent_id}/tokens/revoke")["revoked"]

    def create_token(self, name: str, scope: str, expires_in_s: int | None) -> dict:
        body = {"name": name, "scope": scope, "expires_in_s": expires_in_s}
        return self._request("POST", "/api/v1/tokens", json=body)

    def tokens(self) -> list[dict]:
        return self._request("GET", "/api/v1/tokens")["tokens"]

    def revoke_token(self, token_id: int) -> dict:
        return self._request("POST", f"/api/v1/tokens/{token_id}/revoke")

    def audit(self, limit: int = 100, action: str | None = None) -> list[dict]:
        params = {"limit": limit, **({"action": action} if action else {})}
        return self._request("GET", "/api/v1/audit", params=params)["events"]

    def create_jobs(self, kind: str, agents: list[int | str], params: dict | None = None) -> list:
        body = {
            "kind": kind,
            "agents": agents,
            "params": params or {},
            "requested_by": "saveos-cli",
        }
        return self._request("POST", "/api/v1/jobs", json=body)["jobs"]

    # --- alerts (saveos alerts) --------------------------------------------------------------
    def alert_channels(self) -> list[dict]:
        return self._request("GET", "/api/v1/alerts/channels")["channels"]

    def add_alert_channel(self, body: dict) -> dict:
        return self._request("POST", "/api/v1/alerts/channels", json=body)

    def remove_alert_channel(self, channel_id: int) -> None:
        self._request("DELETE", f"/api/v1/alerts/channels/{channel_id}")

    def flips(self, limit: int = 50, host: str | None = None) -> list[dict]:
        params = {"limit": limit, **({"host": host} if host else {})}
        return self._request("GET", "/api/v1/alerts/flips", params=params)["flips"]

    def deliveries(self, limit: int = 50) -> list[dict]:
        return self._request("GET", "/api/v1/alerts/deliveries", params={"limit": limit})[
            "deliveries"
        ]

    def test_alerts(self, channel_id: int | None = None) -> list[dict]:
        return self._request("POST", "/api/v1/alerts/test", json={"channel_id": channel_id})[
            "results"
        ]


def _detail(body: bytes, reason: str) -> str:
    try:
        detail = orjson.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if detail is None:
        return reason or "no detail"
    if isinstance(detail, list):  # FastAPI validation errors: name the fields
        parts = []
        for item in detail[:3]:
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
        return "; ".join(parts)
    return str(detail)
