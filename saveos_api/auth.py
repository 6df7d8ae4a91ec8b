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
from sqlalchemy.dialects import postgresql
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


# ---- a live agent token: the one definition every agent path uses ------------------------
# (require_agent below, and both heartbeat batches in saveos_api/heartbeats/)


def agent_token_hash(secret: bytes, token: str) -> str | None:
    """What an agent token is stored as; None for anything not shaped like one (the admin
    token included), which then matches no row."""
    return hash_token(secret, token) if AGENT_TOKEN_RE.match(token) else None


def live_agent_token(tokens: sa.FromClause = AgentToken.__table__, agents=Agent.__table__):
    """A token row that still works: not revoked, and its agent not decommissioned."""
    return sa.and_(tokens.c.revoked_at.is_(None), agents.c.decommissioned_at.is_(None))


def live_agent_token_sql(tokens: str, agents: str) -> str:
    """live_agent_token as PostgreSQL text over the aliases of a hand-written statement."""
    clause = live_agent_token(AgentToken.__table__.alias(tokens), Agent.__table__.alias(agents))
    return str(clause.compile(dialect=postgresql.dialect()))


def agent_refusal(app_state, token: str) -> HTTPException:
    """The answer to a token that is not a live agent token: 403 for the admin token."""
    if is_admin_token(app_state, token):
        return forbidden("this endpoint takes an agent token, not the admin token")
    return unauthorized("invalid or revoked agent token")


@dataclass(frozen=True)
class AgentPrincipal:
    agent_id: int
    token_id: int


def _lookup_agent_token(request: Request, session: Session, token: str) -> AgentPrincipal | None:
    """The live token's owner, or None when unknown / revoked / decommissioned."""
    digest = agent_token_hash(request.app.state.secret_key, token)
    if digest is None:
        return None
    row = session.execute(
        sa.select(AgentToken.id, AgentToken.agent_id, AgentToken.last_used_at)
        .join(Agent, Agent.id == AgentToken.agent_id)
        .where(AgentToken.token_hash == digest, live_agent_token())
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
    raise agent_refusal(request.app.state, token)
