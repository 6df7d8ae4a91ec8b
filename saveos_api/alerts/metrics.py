"""/metrics for alerts: flips and deliveries counted from the database, so every worker a
scrape lands on reports the same numbers; the evaluator's last pass from this worker."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from saveos_api.models import AlertDelivery, Flip


class AlertCollector(Collector):
    def __init__(self, db, service):
        self.db = db
        self.service = service

    def collect(self) -> Iterator:
        try:
            with self.db.engine.connect() as conn:
                flips = conn.execute(
                    sa.select(Flip.to_status, sa.func.count())
                    .where(Flip.from_status.is_not(None))
                    .group_by(Flip.to_status)
                ).all()
                deliveries = conn.execute(
                    sa.select(AlertDelivery.state, sa.func.count()).group_by(AlertDelivery.state)
                ).all()
        except Exception:  # noqa: BLE001 - saveos_database_up already says the DB is down
            return
        flip_total = CounterMetricFamily(
            "saveos_flips", "Status changes recorded (first sightings left out)", labels=["to"]
        )
        for status, count in flips:
            flip_total.add_metric([status], count)
        by_state = dict(deliveries)
        delivered = CounterMetricFamily(
            "saveos_alert_deliveries",
            "Notifications by outcome: sent, or dead (given up after SAVEOS_ALERT_GIVE_UP_S)",
            labels=["result"],
        )
        for state in ("sent", "dead"):
            delivered.add_metric([state], by_state.get(state, 0))
        waiting = GaugeMetricFamily(
            "saveos_alert_outbox_waiting", "Notifications waiting to be sent (pending or sending)"
        )
        waiting.add_metric([], by_state.get("pending", 0) + by_state.get("sending", 0))
        yield flip_total
        yield delivered
        yield waiting
        if self.service.last_pass_at is not None:
            last = GaugeMetricFamily(
                "saveos_alert_evaluator_last_pass_timestamp_seconds",
                "Unix time of this worker's last evaluator pass",
            )
            last.add_metric([], self.service.last_pass_at)
            yield last
