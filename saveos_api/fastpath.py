"""`FastPath`: the agents' ordinary requests answered in front of FastAPI.

FastAPI's routing, dependency injection and response-model machinery cost more CPU than a
whole batched write (saveos_api/lanes.py), so the hot agent endpoints (heartbeats, reports)
are answered by this plain ASGI handler. It takes only a POST with a well-formed bearer token
and a JSON body that validates as the route's model (parsed and validated exactly as FastAPI
would: json.loads, then the model). Every other request, including every invalid one, is
passed on unchanged (the body is replayed), so errors keep FastAPI's status codes and
messages; the FastAPI routes also document the endpoints in the OpenAPI schema.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ValidationError

from saveos_api.auth import bearer_token


@dataclass(frozen=True)
class FastRoute:
    """One endpoint. `path` is also what MetricsMiddleware reads from scope["route"]."""

    path: str
    model: type[BaseModel]
    # (app state, bearer token, validated body) -> (status, JSON payload); raises HTTPException
    answer: Callable[[Any, str, Any], Awaitable[tuple[int, Any]]]


class FastPath:
    def __init__(self, app, state: Any, routes: Sequence[FastRoute]):
        self.app = app
        self.state = state
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
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
            body = route.model.model_validate(json.loads(raw))
        except (ValueError, ValidationError, RecursionError):
            return await self.app(scope, _replay(raw, receive), send)
        scope["route"] = route
        try:
            status, payload = await route.answer(self.state, token, body)
        except HTTPException as exc:
            return await _send_json(send, exc.status_code, {"detail": exc.detail}, exc.headers)
        await _send_json(send, status, payload)


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
