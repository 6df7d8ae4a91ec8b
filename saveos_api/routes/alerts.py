"""Admin endpoints for alerts: channels, recent flips and deliveries, a test notification."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import sqlalchemy as sa
from fastapi import HTTPException, Path, Query, Request

from saveos_api.alerts import channels as ch
from saveos_api.alerts import messages
from saveos_api.alerts import schemas as s
from saveos_api.alerts.evaluator import _insert_ignore
from saveos_api.alerts.outbox import send
from saveos_api.audit import audit
from saveos_api.deps import SessionDep, admin_router
from saveos_api.models import Agent, AlertChannel, AlertDelivery, Flip, utcnow
from saveos_api.schemas import INT64_MAX, NAME_PATTERN

router = admin_router("alerts")
# `saveos alerts test` waits for the answer (the CLI gives up after 15 s).
TEST_TIMEOUT_S = 10.0
Limit = Annotated[int, Query(ge=1, le=1000)]


def _channel_out(channel: AlertChannel) -> s.ChannelOut:
    return s.ChannelOut(
        id=channel.id,
        name=channel.name,
        url=channel.url_redacted,
        labels=channel.labels or {},
        min_status=channel.min_status,
        digest=channel.digest,
        source=channel.source,
        created_at=channel.created_at,
        disabled_at=channel.disabled_at,
    )


@router.get("/alerts/channels", response_model=s.ChannelList)
def list_channels(session: SessionDep):
    rows = session.scalars(sa.select(AlertChannel).order_by(AlertChannel.id)).all()
    return {"channels": [_channel_out(c) for c in rows]}


@router.post(
    "/alerts/channels",
    response_model=s.ChannelOut,
    status_code=201,
    responses={409: {"description": "That URL is already a channel"}},
)
def add_channel(body: s.ChannelIn, request: Request, session: SessionDep):
    """Check the URL with Apprise and store it encrypted; the answer shows it redacted."""
    sealer: ch.Sealer = request.app.state.alerts.sealer
    try:
        plugin = ch.load(body.url)
        min_status = ch.check_min_status(body.min_status)
    except ch.ChannelError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    digest = sealer.digest(body.url)
    existing = session.scalars(
        sa.select(AlertChannel).where(AlertChannel.url_hash == digest)
    ).first()
    if existing is not None and existing.disabled_at is None:
        raise HTTPException(409, detail=f"that URL is already channel {existing.id}")
    if existing is not None:
        session.delete(existing)  # a disabled one: replaced by this one
        session.flush()
    channel = AlertChannel(
        name=body.name,
        url_encrypted=sealer.seal(body.url),
        url_hash=digest,
        url_redacted=ch.display(body.url, plugin),
        labels=body.labels,
        min_status=min_status,
        digest=body.digest,
        source="api",
    )
    session.add(channel)
    session.flush()
    # The URL is a secret: the audit log gets its redacted form only.
    audit(
        session,
        request,
        "alerts.add_channel",
        f"channel {channel.id}",
        {"url": channel.url_redacted},
    )
    session.commit()
    return _channel_out(channel)


@router.delete(
    "/alerts/channels/{channel_id}",
    responses={404: {"description": "No such channel"}, 409: {"description": "From settings"}},
)
def remove_channel(
    channel_id: Annotated[int, Path(ge=1, le=INT64_MAX)], request: Request, session: SessionDep
) -> dict:
    channel = session.get(AlertChannel, channel_id)
    if channel is None:
        raise HTTPException(404, detail=f"channel {channel_id} not found")
    if channel.source == "settings" and channel.disabled_at is None:
        raise HTTPException(
            409,
            detail=f"channel {channel_id} is declared in the server settings "
            "(SAVEOS_ALERT_CHANNELS / SAVEOS_ALERT_CHANNELS_FILE): remove it there",
        )
    session.delete(channel)
    audit(session, request, "alerts.remove_channel", f"channel {channel_id}")
    session.commit()
    return {"removed": channel_id}


@router.get("/alerts/flips", response_model=s.FlipList)
def list_flips(
    session: SessionDep,
    limit: Limit = 100,
    host: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    first: Annotated[bool, Query(description="Include first sightings (from null)")] = False,
):
    """Newest first."""
    query = (
        sa.select(Flip, Agent.name)
        .join(Agent, Agent.id == Flip.agent_id)
        .order_by(Flip.at.desc(), Flip.id.desc())
        .limit(limit)
    )
    if host is not None:
        query = query.where(Agent.name == host)
    if not first:
        query = query.where(Flip.from_status.is_not(None))
    rows = session.execute(query).all()
    return {
        "flips": [
            s.FlipOut(
                id=f.id,
                agent_id=f.agent_id,
                host=name,
                from_status=f.from_status,
                to_status=f.to_status,
                at=f.at,
                reason=f.reason,
            )
            for f, name in rows
        ]
    }


@router.get("/alerts/deliveries", response_model=s.DeliveryList)
def list_deliveries(
    session: SessionDep,
    limit: Limit = 100,
    state: Annotated[str | None, Query(pattern="^(pending|sending|sent|dead)$")] = None,
):
    """Newest first."""
    query = (
        sa.select(AlertDelivery, AlertChannel.name, AlertChannel.url_redacted)
        .join(AlertChannel, AlertChannel.id == AlertDelivery.channel_id)
        .order_by(AlertDelivery.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(AlertDelivery.state == state)
    rows = session.execute(query).all()
    return {
        "deliveries": [
            s.DeliveryOut(
                id=d.id,
                channel_id=d.channel_id,
                channel=name or url,
                kind=d.kind,
                flip_id=d.flip_id,
                title=d.title,
                state=d.state,
                attempts=d.attempts,
                created_at=d.created_at,
                next_attempt_at=d.next_attempt_at,
                sent_at=d.sent_at,
                last_error=d.last_error,
            )
            for d, name, url in rows
        ]
    }


@router.post(
    "/alerts/test", response_model=s.TestOut, responses={404: {"description": "No channel"}}
)
def test(body: s.TestIn, request: Request, session: SessionDep):
    """Send a test notice to one channel or every enabled one, now, and say how it went."""
    service = request.app.state.alerts
    query = sa.select(AlertChannel).where(AlertChannel.disabled_at.is_(None))
    if body.channel_id is not None:
        query = query.where(AlertChannel.id == body.channel_id)
    targets = session.scalars(query.order_by(AlertChannel.id)).all()
    if not targets:
        what = f"channel {body.channel_id}" if body.channel_id else "any enabled channel"
        raise HTTPException(404, detail=f"no {what} to test (`saveos alerts channel add`)")
    now = utcnow()
    timeout = min(TEST_TIMEOUT_S, service.settings.alert_send_timeout_s)

    def attempt(channel: AlertChannel) -> tuple[messages.Notice, bool, str | None]:
        notice = messages.test_notice(now, channel.name or channel.url_redacted)
        try:
            url = service.sealer.open(channel.url_encrypted)
        except ch.ChannelError as exc:
            return notice, False, str(exc)
        result = send(url, notice.title, notice.body, notice.notify_type, timeout)
        return notice, result.ok, result.error

    # All at once: a channel that does not answer costs the timeout once, not once per channel.
    with ThreadPoolExecutor(min(8, len(targets))) as pool:
        outcomes = list(pool.map(attempt, targets))
    results = []
    for channel, (notice, outcome_ok, error) in zip(targets, outcomes, strict=True):
        # Kept with the deliveries for `saveos alerts list`; never retried.
        _insert_ignore(
            session,
            AlertDelivery,
            {
                "channel_id": channel.id,
                "kind": "test",
                "dedupe_key": f"test:{now.isoformat()}",
                "notify_type": notice.notify_type,
                "title": notice.title,
                "body": notice.body,
                "state": "sent" if outcome_ok else "dead",
                "attempts": 1,
                "next_attempt_at": now,
                "created_at": now,
                "sent_at": now if outcome_ok else None,
                "last_error": error,
            },
        )
        label = channel.name or channel.url_redacted
        results.append(
            s.TestResult(channel_id=channel.id, channel=label, ok=outcome_ok, error=error)
        )
    session.commit()
    return {"results": results}
