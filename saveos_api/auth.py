"""Bearer auth: one admin token; agent tokens stored only as HMAC-SHA256 with a server secret."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from saveos_api.db import get_session
from saveos_api.models import Agent, AgentToken, utcnow

AGENT_TOKEN_RE = re.compile(r"^sos_[A-Za-z0-9_-]{43}$")
# last_used_at is advisory: refreshing it at most once a minute keeps writes off the hot path.
LAST_USED_RESOLUTION = timedelta(seconds=60)
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def new_agent_token() -> str:
    return "sos_" + secrets.token_urlsafe(32)


def hash_token(secret: bytes, token: str) -> str:
    return hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=CHALLENGE)


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status_code=403, detail=detail)


def bearer(request: Request) -> str:
    return bearer_token(request.headers.get("authorization"))


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 when missing or malformed."""
    if not header:
        raise unauthorized("missing Authorization: Bearer token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("malformed Authorization header (expected 'Bearer <token>')")
    return token


def is_admin_token(app_state, token: str) -> bool:
    return hmac.compare_digest(token.encode(), app_state.admin_token.encode())


@dataclass(frozen=True)
class AgentPrincipal:
    agent_id: int
    token_id: int


def _lookup_agent_token(request: Request, session: Session, token: str) -> AgentPrincipal | None:
    """The live token's owner, or None when unknown / revoked / decommissioned."""
    if not AGENT_TOKEN_RE.match(token):
        return None
    digest = hash_token(request.app.state.secret_key, token)
    row = session.execute(
        sa.select(AgentToken.id, AgentToken.agent_id, AgentToken.last_used_at)
        .join(Agent, Agent.id == AgentToken.agent_id)
        .where(
            AgentToken.token_hash == digest,
            AgentToken.revoked_at.is_(None),
            Agent.decommissioned_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.execute(
            sa.update(AgentToken).where(AgentToken.id == row.id).values(last_used_at=now)
        )
        session.commit()
    return AgentPrincipal(agent_id=row.agent_id, token_id=row.id)


def require_admin(request: Request, session: Session = Depends(get_session)) -> None:
    token = bearer(request)
    if is_admin_token(request.app.state, token):
        return
    if _lookup_agent_token(request, session, token) is not None:
        raise forbidden("agent tokens cannot use admin endpoints")
    raise unauthorized("invalid admin token")


def require_agent(request: Request, session: Session = Depends(get_session)) -> AgentPrincipal:
    token = bearer(request)
    principal = _lookup_agent_token(request, session, token)
    if principal is not None:
        return principal
    if is_admin_token(request.app.state, token):
        raise forbidden("this endpoint takes an agent token, not the admin token")
    raise unauthorized("invalid or revoked agent token")
