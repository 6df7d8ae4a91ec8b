"""Liveness (with and without a database round trip), unauthenticated; metrics (read scope:
they name every host and its backup times)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from saveos_api import schemas
from saveos_api.auth import require_read

router = APIRouter(tags=["open"])


@router.get(
    "/health",
    response_model=schemas.HealthOut,
    responses={503: {"model": schemas.HealthOut, "description": "The database does not answer"}},
)
async def health(request: Request):
    if await run_in_threadpool(request.app.state.db.ping):
        return {"status": "ok", "database": "ok"}
    return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)


@router.get("/livez", response_model=schemas.LiveOut)
async def livez():
    # Process liveness only: a database outage must not make an orchestrator restart the API
    # (that is what /health reports); also the framework floor for benchmarks/p3_heartbeat.py.
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        401: {"description": "Missing or unknown token"},
        403: {"description": "An agent token"},
    },
    dependencies=[Depends(require_read)],
)
async def metrics(request: Request):
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
