"""Unauthenticated endpoints: liveness with a real database round trip, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from saveos_api import schemas

router = APIRouter()


@router.get(
    "/health",
    response_model=schemas.HealthOut,
    responses={503: {"model": schemas.HealthOut, "description": "The database does not answer"}},
)
async def health(request: Request):
    if await run_in_threadpool(request.app.state.db.ping):
        return {"status": "ok", "database": "ok"}
    return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request):
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
