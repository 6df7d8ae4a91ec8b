"""The ASGI app. `create_app(settings)` builds one; `saveos_api.main:app` builds it from the env."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from saveos_api import migrations, web
from saveos_api.alerts.metrics import AlertCollector
from saveos_api.alerts.service import AlertService
from saveos_api.auth import ensure_first_admin_token
from saveos_api.db import Database
from saveos_api.fastpath import FastPath
from saveos_api.heartbeats import HEARTBEAT_ROUTE, HeartbeatWriter
from saveos_api.metrics import BodyLimitMiddleware, Metrics, MetricsMiddleware
from saveos_api.reports import REPORT_ROUTES, ReportWriter
from saveos_api.routes import admin, agent, alerts, escrow, maintenance, open, tokens
from saveos_api.settings import Settings

log = logging.getLogger("saveos_api")


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or Settings()
    settings.validate_secrets()  # raises ConfigError before anything listens
    db = Database(settings.effective_database_url, settings.db_pool_size)
    if migrate:
        migrations.upgrade(db.url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await app.state.heartbeats.start()
        await app.state.reports.start()
        await app.state.alerts.start()
        # Everything built so far (FastAPI, SQLAlchemy, pydantic) lives as long as the process:
        # frozen, the collector stops re-scanning it in every full collection, which otherwise
        # stalls all requests of this worker at once and sets the heartbeat p99.
        gc.collect()
        gc.freeze()
        yield
        await app.state.alerts.stop()
        await app.state.reports.stop()
        await app.state.heartbeats.stop()
        db.dispose()

    app = FastAPI(
        title="SaveOS API",
        version="1",
        lifespan=lifespan,
        description="Control plane for SaveOS agents; see saveos_api/API.md.",
        # The schema and its pages describe every endpoint to anyone who asks: closed
        # (the contract is saveos_api/API.md; tests read app.openapi() in process).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.admin_token = settings.admin_token_value
    app.state.secret_key = settings.secret_key_bytes
    ensure_first_admin_token(db, app.state.secret_key, app.state.admin_token)
    app.state.metrics = Metrics(db, settings.metrics_cache_s)
    app.state.heartbeats = HeartbeatWriter(app.state)
    app.state.reports = ReportWriter(app.state)
    app.state.alerts = AlertService(app.state)  # raises ConfigError on a bad declared channel
    app.state.metrics.registry.register(AlertCollector(db, app.state.alerts))
    # Agent routes first: /agents/me must not be taken for /agents/{agent_id}.
    app.include_router(agent.router)
    app.include_router(admin.router)
    app.include_router(escrow.router)
    app.include_router(tokens.router)
    app.include_router(alerts.router)
    app.include_router(maintenance.router)
    app.include_router(open.router)
    web.mount(app)  # the dashboard: HTML pages and their static files
    _install_error_handlers(app)
    # Innermost first: metrics see 413s too, and the fast path (heartbeats, reports) sees
    # neither oversized bodies nor escapes the metrics.
    app.add_middleware(FastPath, state=app.state, routes=(HEARTBEAT_ROUTE, *REPORT_ROUTES))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        # The default handler echoes the input back; bytes that are not UTF-8 would crash it.
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        # FastAPI answers 400 when the body cannot be decoded at all (not UTF-8, nested too deep);
        # that is invalid input like any other, so it gets the documented 422 naming the body.
        if exc.status_code == 400 and exc.__cause__ is not None:
            detail = [
                {"loc": ["body"], "msg": "body is not valid UTF-8 JSON", "type": "json_invalid"}
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RecursionError)
    async def _too_deep(_request: Request, _exc: RecursionError):
        return JSONResponse({"detail": "JSON nested too deeply"}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def _db_error(_request: Request, exc: DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            # Said in the log too: SQLite raises OperationalError for a schema that does not
            # match the code as well, which a client's 503 alone would hide.
            log.warning("database unavailable: %s", exc.orig)
            return JSONResponse({"detail": "database unavailable"}, status_code=503)
        log.error("database error: %s", exc.orig)
        return JSONResponse({"detail": "database error"}, status_code=500)


def __getattr__(name: str):
    # Lazy so that importing the module (tests, tools) does not need a configured environment.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
