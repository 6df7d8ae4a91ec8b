"""A small client for the SaveOS HTTP API (saveos_api/API.md) that speaks in SaveOSErrors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from saveos_cli.errors import SaveOSError

SERVER_HINT = (
    "Start it with `saveos server`, or point the CLI at it with --api-url / SAVEOS_API_URL."
)


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 15.0):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, what: str = "", **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise SaveOSError(
                f"the SaveOS API at {self.base_url} did not answer in time.", hint=SERVER_HINT
            ) from exc
        except httpx.TransportError as exc:
            raise SaveOSError(
                f"cannot reach the SaveOS API at {self.base_url} ({type(exc).__name__}).",
                hint=SERVER_HINT,
            ) from exc
        if resp.status_code == 401:
            raise SaveOSError(
                f"the API at {self.base_url} rejected the admin token (401).",
                hint="Check SAVEOS_ADMIN_TOKEN or the token file it came from.",
            )
        if resp.status_code == 403:
            raise SaveOSError(
                f"the token is not allowed to do this (403): {self.base_url} wants the admin token,"
                " not an agent token."
            )
        if resp.status_code == 404 and what:
            raise SaveOSError(f"unknown host {what!r}: no agent with that name is registered.")
        if resp.status_code >= 400:
            raise SaveOSError(
                f"the API refused {method} {path} ({resp.status_code}): {_detail(resp)}."
            )
        try:
            return resp.json()
        except ValueError as exc:
            raise SaveOSError(f"the API answered {method} {path} with something not JSON.") from exc

    # --- admin endpoints -------------------------------------------------------------------
    def fleet_status(self, at: datetime | None = None) -> dict:
        params = {"at": at.isoformat()} if at else None
        return self._request("GET", "/api/v1/fleet/status", params=params)

    def agents(self) -> list[dict]:
        return self._request("GET", "/api/v1/agents")["agents"]

    def agent_by_name(self, name: str) -> dict:
        return self._request("GET", f"/api/v1/agents/by-name/{name}", what=name)

    def snapshots(self, agent_id: int, limit: int = 50, offset: int = 0) -> dict:
        return self._request(
            "GET", f"/api/v1/agents/{agent_id}/snapshots", params={"limit": limit, "offset": offset}
        )

    def record_escrow_proof(self, agent_id: int, proof: dict) -> dict:
        return self._request("POST", f"/api/v1/agents/{agent_id}/escrow", json=proof)

    def revoke_tokens(self, agent_id: int) -> int:
        return self._request("POST", f"/api/v1/agents/{agent_id}/tokens/revoke")["revoked"]

    def create_jobs(self, kind: str, agents: list[int | str], params: dict | None = None) -> list:
        body = {
            "kind": kind,
            "agents": agents,
            "params": params or {},
            "requested_by": "saveos-cli",
        }
        return self._request("POST", "/api/v1/jobs", json=body)["jobs"]


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if detail is None:
        return resp.reason_phrase or "no detail"
    if isinstance(detail, list):  # FastAPI validation errors: name the fields
        parts = []
        for item in detail[:3]:
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
        return "; ".join(parts)
    return str(detail)
