"""The dashboard's sessions: log in with an API token (a CSRF-checked form, the token never in
a URL), log out; `/` sends a visitor to the fleet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request

from saveos_api.audit import audit
from saveos_api.web import auth
from saveos_api.web.deps import OperatorDep, SessionDep
from saveos_api.web.render import page
from saveos_api.web.shared import Csrf, see_other

router = APIRouter(include_in_schema=False)


@router.get("/")
def root():
    return see_other("/fleet")


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never another host ('//evil', 'https://...')."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/fleet"
    return target


@router.get("/login")
def login_form(
    request: Request,
    next: Annotated[str | None, Query(alias="next", max_length=2000)] = None,  # noqa: A002
    reason: Annotated[str | None, Query(max_length=20)] = None,
):
    token = auth.new_login_csrf()
    messages = {
        "expired": "Your session expired: log in again (nothing was changed).",
        "logout": "You are logged out.",
        "login": "Log in to continue.",
        "revoked": "The token this session was opened with was revoked or expired: log in again.",
    }
    response = page(
        request,
        "login.html",
        {"login_csrf": token, "next": _safe_next(next), "message": messages.get(reason or "")},
    )
    response.set_cookie(
        auth.LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=auth.secure_cookies(request),
        path="/login",
    )
    return response


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form(max_length=4096)] = "",
    csrf: Csrf = None,
    next: Annotated[str | None, Form(alias="next", max_length=2000)] = None,  # noqa: A002
):
    auth.check_login_csrf(request, csrf)
    operator = auth.operator_for_token(request, session, token.strip())
    if operator is None:
        response = page(
            request,
            "login.html",
            {
                "login_csrf": request.cookies.get(auth.LOGIN_CSRF_COOKIE),
                "next": _safe_next(next),
                "error": "That token is not valid (or was revoked): not logged in.",
            },
            status_code=401,
        )
        return response
    auth.principal(request, operator)
    audit(session, request, "web.login", None, {"scope": operator.scope})
    value, ttl = auth.start_session(request, session, operator)  # commits both
    response = see_other(_safe_next(next))
    response.set_cookie(
        auth.SESSION_COOKIE,
        value,
        max_age=ttl,
        httponly=True,
        samesite="strict",
        secure=auth.secure_cookies(request),
        path="/",
    )
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, operator: OperatorDep, csrf: Csrf = None):
    auth.check_csrf(request, csrf)
    auth.principal(request, operator)
    audit(session, request, "web.logout")
    auth.end_session(request, session)  # commits both
    response = see_other("/login?reason=logout")
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response
