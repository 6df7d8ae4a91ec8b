"""The delivery worker: send what the outbox holds, each row once, retrying with backoff.

A row is claimed by `UPDATE ... SET state='sending' WHERE id = :id AND state = 'pending'`
(committed before the send), so two workers never send the same row; after a send it is
`sent`, or back to `pending` with the next attempt pushed out (exponential backoff, capped),
until it is older than SAVEOS_ALERT_GIVE_UP_S (`dead`). A failed channel also pushes its other
waiting rows to the same time: one down server costs one attempt per retry, not one per message.
Channels are drained in parallel, each by one thread in order, so a slow or dead channel holds
up only itself. A row claimed by a process that died mid-send goes back to `pending` when its
lease runs out: the one case where a message may arrive twice (the channel took it, the
process died before it could write `sent`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from saveos_api.alerts import channels as ch
from saveos_api.db import Database
from saveos_api.models import AlertChannel, AlertDelivery, utcnow

log = logging.getLogger("saveos_api.alerts")
BATCH = 500


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error: str | None = None


def send(url: str, title: str, body: str, notify_type: str, timeout_s: float) -> SendResult:
    """One notification through Apprise; the error redacted (it may quote the URL)."""
    apprise = ch._apprise()
    with ch.apprise_log() as lines:
        try:
            plugin = apprise.Apprise.instantiate(url, asset=ch.asset_with(timeout_s))
            if plugin is None:
                return SendResult(False, ch.redact("; ".join(lines) or "unusable URL", url))
            sender = apprise.Apprise(asset=ch.asset_with(timeout_s))
            sender.add(plugin)
            result = sender.notify(body=body, title=title, notify_type=notify_type)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is one failed send
            return SendResult(False, ch.redact(f"{type(exc).__name__}: {exc}", url))
    if result:
        return SendResult(True)
    # The service's own account of the failure (its log lines ride on the result).
    said = [
        entry.message
        for service in getattr(result, "results", ())
        for attempt in service.attempts
        for entry in attempt.logs
        if entry.level in ("WARNING", "ERROR", "CRITICAL")
    ]
    return SendResult(False, ch.redact("; ".join(said[-3:]) or "the service refused it", url))


class Outbox:
    def __init__(self, db: Database, settings, sealer: ch.Sealer):
        self.db = db
        self.settings = settings
        self.sealer = sealer

    @property
    def lease(self) -> timedelta:
        # Longer than any send can take (Apprise enforces the send timeout per service).
        return timedelta(seconds=max(120.0, 4 * self.settings.alert_send_timeout_s))

    def backoff(self, attempts: int) -> float:
        base, cap = self.settings.alert_retry_base_s, self.settings.alert_retry_max_s
        return min(cap, base * 2 ** max(0, attempts - 1))

    def due(self, now: datetime | None = None) -> dict[int, list[int]]:
        """Rows to send now, by channel, oldest first; expired leases are released first."""
        now = now or utcnow()
        with self.db.sessions() as session:
            released = session.execute(
                sa.update(AlertDelivery)
                .where(AlertDelivery.state == "sending", AlertDelivery.lease_until < now)
                .values(state="pending", lease_until=None)
                .execution_options(synchronize_session=False)
            ).rowcount
            if released:
                log.warning("alerts: %d delivery(ies) left mid-send by a stopped worker", released)
            rows = session.execute(
                sa.select(AlertDelivery.channel_id, AlertDelivery.id)
                .join(AlertChannel, AlertChannel.id == AlertDelivery.channel_id)
                .where(
                    AlertDelivery.state == "pending",
                    AlertDelivery.next_attempt_at <= now,
                    AlertChannel.disabled_at.is_(None),  # dropped from the settings: kept, not sent
                )
                .order_by(AlertDelivery.id)
                .limit(BATCH)
            ).all()
            session.commit()
        out: dict[int, list[int]] = {}
        for channel_id, delivery_id in rows:
            out.setdefault(channel_id, []).append(delivery_id)
        return out

    def drain(self, channel_id: int, ids: list[int], stop=None) -> tuple[int, int]:
        """Send `ids` of one channel in order; stop at its first failure, or when `stop` (an
        Event) is set between two sends. (sent, failed)."""
        with self.db.sessions() as session:
            channel = session.get(AlertChannel, channel_id)
            if channel is None:
                return 0, 0
            label = channel.name or channel.url_redacted
            try:
                url = self.sealer.open(channel.url_encrypted)
            except ch.ChannelError as exc:
                url, broken = None, str(exc)
        sent = failed = 0
        for delivery_id in ids:
            if stop is not None and stop.is_set():
                break
            row = self._claim(delivery_id)
            if row is None:
                continue
            if url is None:
                result = SendResult(False, broken)
            else:
                result = send(
                    url, row.title, row.body, row.notify_type, self.settings.alert_send_timeout_s
                )
            if result.ok:
                self._sent(delivery_id)
                sent += 1
                continue
            failed += 1
            self._failed(row, result.error or "failed", label)
            break
        return sent, failed

    def _claim(self, delivery_id: int):
        now = utcnow()
        with self.db.sessions() as session:
            claimed = session.execute(
                sa.update(AlertDelivery)
                .where(
                    AlertDelivery.id == delivery_id,
                    AlertDelivery.state == "pending",
                    AlertDelivery.next_attempt_at <= now,
                )
                .values(
                    state="sending",
                    lease_until=now + self.lease,
                    attempts=AlertDelivery.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            session.commit()
            if claimed != 1:
                return None  # another worker has it, or it was sent meanwhile
            return session.get(AlertDelivery, delivery_id)

    def _sent(self, delivery_id: int) -> None:
        with self.db.sessions() as session:
            session.execute(
                sa.update(AlertDelivery)
                .where(AlertDelivery.id == delivery_id)
                .values(state="sent", sent_at=utcnow(), lease_until=None, last_error=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()

    def _failed(self, row: AlertDelivery, error: str, label: str) -> None:
        now = utcnow()
        given_up = now - row.created_at > timedelta(seconds=self.settings.alert_give_up_s)
        retry_at = now + timedelta(seconds=self.backoff(row.attempts))
        with self.db.sessions() as session:
            session.execute(
                sa.update(AlertDelivery)
                .where(AlertDelivery.id == row.id)
                .values(
                    state="dead" if given_up else "pending",
                    next_attempt_at=retry_at,
                    lease_until=None,
                    last_error=error[:2000],
                )
                .execution_options(synchronize_session=False)
            )
            # The channel's other waiting rows wait for the same retry.
            session.execute(
                sa.update(AlertDelivery)
                .where(
                    AlertDelivery.channel_id == row.channel_id,
                    AlertDelivery.state == "pending",
                    AlertDelivery.next_attempt_at < retry_at,
                )
                .values(next_attempt_at=retry_at)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        if given_up:
            log.error("alerts: gave up on delivery %d to %s: %s", row.id, label, error)
        else:
            log.warning(
                "alerts: delivery %d to %s failed (attempt %d, retry in %.0fs): %s",
                row.id,
                label,
                row.attempts,
                (retry_at - now).total_seconds(),
                error,
            )
