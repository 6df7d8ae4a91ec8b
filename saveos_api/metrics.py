"""Prometheus metrics (requests via middleware, fleet gauges read at scrape time), body limit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from saveos_rules import STATUSES

from saveos_api.db import Database
from saveos_api.fleet import fleet_status
from saveos_api.models import DrillResult, utcnow

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class FleetCollector(Collector):
    """Reads the database on every scrape so the gauges are never stale and never leak agents."""

    def __init__(self, db: Database, cache_s: float = 15.0):
        self.db = db
        # A scrape is a full fleet query: served from this cache for cache_s seconds, so
        # scrapes (one per Prometheus replica, or a flood of them) cost one query per period.
        self.cache_s = cache_s
        self._cached: tuple[float, tuple[dict, dict]] | None = None
        self._lock = threading.Lock()

    def _fleet(self) -> tuple[dict, dict]:
        """(the fleet status, each agent's last passing drill), read at most every cache_s."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_s:
                with self.db.engine.connect() as conn:
                    fleet = fleet_status(conn, utcnow())
                    passed = dict(conn.execute(last_passing_drills()).all())
                self._cached = (now, (fleet, passed))
            return self._cached[1]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = {
            "last_heartbeat": GaugeMetricFamily(
                "saveos_agent_last_heartbeat_timestamp_seconds",
                "Unix time of the agent's last heartbeat",
                labels=["agent"],
            ),
            "last_backup_at": GaugeMetricFamily(
                "saveos_agent_last_backup_timestamp_seconds",
                "Unix time the agent's last successful backup finished",
                labels=["agent"],
            ),
            "last_check_at": GaugeMetricFamily(
                "saveos_agent_last_check_timestamp_seconds",
                "Unix time the agent's last repository check finished",
                labels=["agent"],
            ),
            "last_drill_at": GaugeMetricFamily(
                "saveos_agent_last_drill_timestamp_seconds",
                "Unix time the agent's last restore drill finished",
                labels=["agent"],
            ),
            "last_offsite_at": GaugeMetricFamily(
                "saveos_agent_last_offsite_sync_timestamp_seconds",
                "Unix time the agent's last successful offsite sync finished",
                labels=["agent"],
            ),
            "last_escrow_at": GaugeMetricFamily(
                "saveos_agent_last_escrow_proof_timestamp_seconds",
                "Unix time the escrowed passphrase and key last opened the agent's repository",
                labels=["agent"],
            ),
        }
        verified = GaugeMetricFamily(
            "saveos_agent_last_verified_restore_timestamp_seconds",
            "Unix time the agent's last passing restore drill finished",
            labels=["agent"],
        )
        # Where each repository lives: server="" is a repository on the host's own disk.
        repo_gauges = {
            "repository_used_bytes": GaugeMetricFamily(
                "saveos_agent_repository_used_bytes",
                "Bytes the archives of the agent's repository use (deduplicated, compressed)",
                labels=["agent", "server", "path"],
            ),
            "repository_quota_bytes": GaugeMetricFamily(
                "saveos_agent_repository_quota_bytes",
                "Storage quota of the agent's repository on its repository server",
                labels=["agent", "server", "path"],
            ),
        }
        by_status = GaugeMetricFamily(
            "saveos_agents", "Agents by computed status", labels=["status"]
        )
        up = GaugeMetricFamily("saveos_database_up", "1 when the database answered this scrape")
        try:
            fleet, passed = self._fleet()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is down
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for agent in fleet["agents"]:
            for key, gauge in gauges.items():
                if agent[key] is not None:
                    gauge.add_metric([agent["name"]], agent[key].timestamp())
            if passed.get(agent["id"]) is not None:
                verified.add_metric([agent["name"]], _aware(passed[agent["id"]]).timestamp())
            where = [
                agent["name"],
                agent["repository_server"] or "",
                agent["repository_path"] or "",
            ]
            for key, gauge in repo_gauges.items():
                if agent[key] is not None:
                    gauge.add_metric(where, agent[key])
        for status in STATUSES:
            by_status.add_metric([status], fleet["totals"]["by_status"][status])
        yield up
        yield from gauges.values()
        yield verified
        yield from repo_gauges.values()
        yield by_status


def last_passing_drills() -> sa.Select:
    """(agent id, finished_at of its last passing drill): a failed drill verifies nothing."""
    return (
        sa.select(DrillResult.agent_id, sa.func.max(DrillResult.finished_at))
        .where(DrillResult.result == "pass")
        .group_by(DrillResult.agent_id)
    )


def _aware(moment: datetime) -> datetime:
    """max() comes back without UTCDateTime's conversion: naive on SQLite, meaning UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Metrics:
    def __init__(self, db: Database, cache_s: float = 15.0):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "saveos_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "saveos_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.heartbeat_batch = Histogram(
            "saveos_heartbeat_batch_size",
            "Heartbeats written per group-commit transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.report_batch = Histogram(
            "saveos_report_batch_size",
            "Reports written per group-commit transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.registry.register(FleetCollector(db, cache_s))


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead); labels by route template, not raw path."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        # Labelled children by label values: a dict hit instead of labels() (which takes a lock
        # and validates the labels) on every request. Bounded: methods x route templates.
        self.counters: dict[tuple[str, str, int], Any] = {}
        self.timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            key = (method, template, status[0])
            counter = self.counters.get(key)
            if counter is None:
                counter = self.counters[key] = self.metrics.requests.labels(
                    method, template, str(status[0])
                )
            counter.inc()
            timer = self.timers.get(key[:2])
            if timer is None:
                timer = self.timers[key[:2]] = self.metrics.latency.labels(method, template)
            timer.observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413 before any handler parses them."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        # With Transfer-Encoding the server reads the body as chunks whatever Content-Length
        # says (h11 does, as RFC 9112 asks): only the bytes counted below can be trusted.
        if length is not None and chunked is None:
            if not length.isdigit():
                return await _reply(send, 400, "invalid Content-Length header")
            if int(length) > self.max_bytes:
                return await _reply(send, 413, f"body larger than {self.max_bytes} bytes")
            return await self.app(scope, receive, send)
        # Chunked body of unknown length: buffer it up to the limit, then replay it.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reply(send, 413, f"body larger than {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
