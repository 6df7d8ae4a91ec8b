"""`HeartbeatFastPath`: the ordinary heartbeat answered in front of FastAPI (see __init__)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError

from saveos_api.auth import bearer_token
from saveos_api.deps import API_PREFIX
from saveos_api.schemas import HeartbeatIn

HEARTBEAT_PATH = f"{API_PREFIX}/agents/heartbeat"


@dataclass(frozen=True)
class _RouteLabel:
    """What MetricsMiddleware reads from scope["route"] (the route template)."""

    path: str


class HeartbeatFastPath:
    """Pure ASGI: the ordinary heartbeat goes straight to the writer; the rest to FastAPI.

    It answers only a POST with a well-formed bearer token and a JSON body that validates as
    HeartbeatIn (parsed and validated exactly as FastAPI would: json.loads, then the model).
    Every other request, including every invalid one, is passed on unchanged (the body is
    replayed), so errors keep FastAPI's status codes and messages.
    """

    def __init__(self, app, state: Any):
        self.app = app
        self.state = state
        self.route = _RouteLabel(HEARTBEAT_PATH)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != HEARTBEAT_PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        if content_type is not None and not _is_plain_json(content_type):
            return await self.app(scope, receive, send)
        try:
            token = bearer_token(authorization)
        except HTTPException:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = HeartbeatIn.model_validate(json.loads(raw))
        except (ValueError, ValidationError, RecursionError):
            return await self.app(scope, _replay(raw, receive), send)
        scope["route"] = self.route
        try:
            result = await self.state.heartbeats.submit(token, body)
        except HTTPException as exc:
            payload = {"detail": exc.detail}
            return await _send_json(send, exc.status_code, payload, exc.headers)
        payload = {
            "agent_id": result["agent_id"],
            "server_time": result["server_time"].isoformat().replace("+00:00", "Z"),
            "jobs": result["jobs"],
        }
        await _send_json(send, 200, payload)


def _is_plain_json(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _replay(raw: bytes, receive):
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


async def _send_json(send, status: int, payload: Any, extra_headers=None) -> None:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    for name, value in (extra_headers or {}).items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
