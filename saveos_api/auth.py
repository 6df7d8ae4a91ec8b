"""Bearer auth. Agent tokens (one agent each) and operators' scoped tokens (read < operate <
admin) are stored only as HMAC-SHA256 with a server secret. The admin token of `saveos server
init` (or SAVEOS_ADMIN_TOKEN) is entered as the first admin token when the server starts."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from saveos_api.db import get_session
from saveos_api.models import Agent, AgentToken, ApiToken, utcnow

AGENT_TOKEN_RE = re.compile(r"^sos_[A-Za-z0-9_-]{43}$")
# Operators' tokens; the first admin token (from `server init`) may be any strong string.
API_TOKEN_PREFIX = "sot_"  # noqa: S105 - a prefix, not a secret
SCOPES = ("read", "operate", "admin")  # each includes the ones before it
# last_used_at is advisory: refreshing it at most once a minute keeps writes off the hot path.
LAST_USED_RESOLUTION = timedelta(seconds=60)
CHALLENGE = {"WWW-Authenticate": "Bearer"}
NOT_AN_AGENT_TOKEN = "this endpoint takes an agent token, not an operator's token"  # noqa: S105


def new_agent_token() -> str:
    return "sos_" + secrets.token_urlsafe(32)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


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


def touch_agent_tokens(conn, used: list[tuple[int, datetime | None]], now: datetime) -> None:
    """Refresh last_used_at of the (token id, last_used_at) pairs a batch used, where stale."""
    stale = [i for i, at in used if at is None or now - at > LAST_USED_RESOLUTION]
    if stale:
        conn.execute(sa.update(AgentToken).where(AgentToken.id.in_(stale)).values(last_used_at=now))


def agent_refusal(app_state, token: str) -> HTTPException:
    """The answer to a token that is not a live agent token: 403 for an operator's token."""
    if is_api_token(app_state, token):
        return forbidden(NOT_AN_AGENT_TOKEN)
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


@dataclass(frozen=True)
class ApiPrincipal:
    """An operator's live token: what the audit log records as "who"."""

    token_id: int
    name: str
    scope: str

    @property
    def actor(self) -> str:
        return f"token {self.token_id} ({self.name})"

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


def lookup_api_token(
    session: Session, secret: bytes, token: str, now: datetime | None = None
) -> ApiToken | None:
    """The operator's token row (live or not) for this bearer token, or None."""
    if AGENT_TOKEN_RE.match(token):
        return None
    digest = hash_token(secret, token)
    return session.scalars(sa.select(ApiToken).where(ApiToken.token_hash == digest)).first()


def is_api_token(app_state, token: str) -> bool:
    """A live operator's token (any scope): agent endpoints answer it 403, not 401."""
    if is_admin_token(app_state, token):
        return True
    with app_state.db.sessions() as session:
        row = lookup_api_token(session, app_state.secret_key, token)
        return row is not None and _live(row, utcnow())


def _live(row: ApiToken, now: datetime) -> bool:
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


def ensure_first_admin_token(db, secret: bytes, token: str) -> None:
    """Enter the configured admin token as an admin token unless its hash is known already
    (then it stays as it is: a revoked one stays revoked)."""
    digest = hash_token(secret, token)
    with db.sessions() as session:
        if session.scalar(sa.select(ApiToken.id).where(ApiToken.token_hash == digest)):
            return
        session.add(ApiToken(name="server-init", scope="admin", token_hash=digest))
        try:
            session.commit()
        except sa.exc.IntegrityError:  # another worker entered it first
            session.rollback()


def _principal(request: Request, session: Session, token: str) -> ApiPrincipal:
    if _lookup_agent_token(request, session, token) is not None:
        raise forbidden("agent tokens cannot use admin endpoints")
    now = utcnow()
    row = lookup_api_token(session, request.app.state.secret_key, token, now)
    if row is None or row.revoked_at is not None:
        raise unauthorized("invalid or revoked token")
    if row.expires_at is not None and row.expires_at <= now:
        raise unauthorized(f"token {row.id} expired at {row.expires_at.isoformat()}")
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.execute(sa.update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return ApiPrincipal(token_id=row.id, name=row.name, scope=row.scope)


def require_scope(scope: str):
    """The dependency of an operator endpoint: a live token whose scope includes `scope`.

    The principal is returned (and left in request.state.principal) for audit()."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(request: Request, session: Session = Depends(get_session)) -> ApiPrincipal:
        principal = _principal(request, session, bearer(request))
        if not principal.allows(scope):
            raise forbidden(
                f"this endpoint needs a token with the '{scope}' scope; "
                f"token {principal.token_id} has '{principal.scope}'"
            )
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


require_read = require_scope("read")
require_operate = require_scope("operate")
require_admin = require_scope("admin")


def require_agent(request: Request, session: Session = Depends(get_session)) -> AgentPrincipal:
    token = bearer(request)
    principal = _lookup_agent_token(request, session, token)
    if principal is not None:
        return principal
    raise agent_refusal(request.app.state, token)
