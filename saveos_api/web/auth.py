"""Dashboard logins: a token exchanged for a session cookie, scopes, CSRF.

Who a token is and what it may do is the API's own operator tokens (api_tokens, scopes read <
operate < admin), looked up by `operator_for_token`, so the dashboard and the API never
disagree; the cookie's value is random, and only its HMAC is stored
(web_sessions). CSRF: every form carries an HMAC of the session cookie keyed by the server
secret (synchronizer token, nothing to store); the login form, before any session exists,
a double-submit cookie. Cookies are HttpOnly, SameSite=Strict, Secure under TLS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from fastapi import Request
from sqlalchemy.orm import Session

from saveos_api.auth import SCOPES, ApiPrincipal, _live, lookup_api_token
from saveos_api.models import ApiToken, WebSession, utcnow

SESSION_COOKIE = "saveos_session"
LOGIN_CSRF_COOKIE = "saveos_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Operator:
    name: str
    scope: str
    token_ref: str | None = None

    def can(self, needed: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


class LoginRequired(Exception):
    """No live session: the page sends the browser to the login form, saying why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Refused(Exception):
    """The request is not allowed (scope, CSRF); nothing was changed."""

    def __init__(self, message: str, status_code: int = 403):
        super().__init__(message)
        self.message, self.status_code = message, status_code


def operator_for_token(request: Request, session: Session, token: str) -> Operator | None:
    """Who `token` is, with its scope: a live operator token of the API (api_tokens; the
    admin token of `saveos server init` is one too); None otherwise."""
    if not token:
        return None
    row = lookup_api_token(session, request.app.state.secret_key, token)
    if row is None or not _live(row, utcnow()):
        return None
    return Operator(row.name, row.scope, str(row.id))


def _token_row(session: Session, operator: Operator) -> ApiToken | None:
    try:
        return session.get(ApiToken, int(operator.token_ref or ""))
    except ValueError:
        return None


def principal(request: Request, operator: Operator) -> ApiPrincipal:
    """The API's principal for this operator, left where audit() finds it."""
    found = ApiPrincipal(token_id=int(operator.token_ref), name=operator.name, scope=operator.scope)
    request.state.principal = found
    return found


def _digest(request: Request, value: str, purpose: str) -> str:
    key = request.app.state.secret_key
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(request: Request, session: Session, operator: Operator) -> tuple[str, int]:
    """A new session row; (cookie value, lifetime in seconds)."""
    ttl = request.app.state.settings.web_session_ttl_s
    value = secrets.token_urlsafe(32)
    now = utcnow()
    # Expired rows are of no use to anyone: each login sweeps them (indexed on expires_at).
    session.execute(sa.delete(WebSession).where(WebSession.expires_at < now - timedelta(days=1)))
    session.add(
        WebSession(
            session_hash=_digest(request, value, "session"),
            principal=operator.name,
            scope=operator.scope,
            token_ref=operator.token_ref,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    session.commit()
    return value, ttl


def end_session(request: Request, session: Session) -> None:
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return
    session.execute(
        sa.update(WebSession)
        .where(
            WebSession.session_hash == _digest(request, value, "session"),
            WebSession.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    session.commit()


def current_operator(request: Request, session: Session) -> Operator:
    """The logged-in operator of this request; LoginRequired when there is none."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        raise LoginRequired("login")
    row = session.execute(
        sa.select(WebSession).where(WebSession.session_hash == _digest(request, value, "session"))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        raise LoginRequired("login")
    if row.expires_at <= utcnow():
        raise LoginRequired("expired")
    operator = Operator(row.principal, row.scope, row.token_ref)
    # The token the session was opened with is checked on every request: revoking it (or its
    # expiry) ends its sessions too, and a changed scope applies at once.
    token = _token_row(session, operator)
    if token is None or not _live(token, utcnow()):
        raise LoginRequired("revoked")
    return Operator(token.name, token.scope, operator.token_ref)


def csrf_token(request: Request) -> str:
    """The token every form of this session carries."""
    return _digest(request, request.cookies.get(SESSION_COOKIE, ""), "csrf")


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a state-changing request whose CSRF token (form field or X-CSRF-Token header) is
    missing or not this session's, or that comes from another origin."""
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise Refused(f"refused: the request came from another origin ({origin})")
    submitted = submitted or request.headers.get(CSRF_HEADER)
    if not submitted or not hmac.compare_digest(submitted, csrf_token(request)):
        raise Refused(
            "refused: the form's CSRF token is missing or stale, so nothing was changed. "
            "Reload the page and try again."
        )


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def check_login_csrf(request: Request, submitted: str | None) -> None:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise Refused(
            "refused: the login form's CSRF token is missing or stale. Reload the page and "
            "log in again."
        )


def require_scope(operator: Operator, needed: str) -> None:
    if not operator.can(needed):
        raise Refused(
            f"refused: {operator.name} has the {operator.scope} scope; this needs {needed}. "
            "Nothing was changed."
        )
