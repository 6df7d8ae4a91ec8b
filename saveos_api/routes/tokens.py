"""Operators' tokens and the audit log (admin scope): create, list, revoke; read the log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy.orm import Session

from saveos_api import schemas
from saveos_api.audit import audit
from saveos_api.auth import ApiPrincipal, hash_token, new_api_token, require_admin
from saveos_api.db import get_session
from saveos_api.models import ApiToken, AuditEvent, utcnow

ERRORS = {
    401: {"description": "Missing, malformed, unknown, revoked or expired token"},
    403: {"description": "A token without the admin scope, or an agent token"},
    422: {"description": "Invalid input; the detail names the field"},
}
router = APIRouter(prefix="/api/v1", tags=["tokens"], responses=ERRORS)
SessionDep = Annotated[Session, Depends(get_session)]
AdminDep = Annotated[ApiPrincipal, Depends(require_admin)]
TokenId = Annotated[int, Path(ge=1, le=schemas.INT64_MAX)]


@router.post("/tokens", response_model=schemas.ApiTokenCreated, status_code=201)
def create_token(
    body: schemas.ApiTokenIn, request: Request, principal: AdminDep, session: SessionDep
):
    """The token is in this answer only; the server keeps its HMAC."""
    token = new_api_token()
    expires_at = utcnow() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    row = ApiToken(
        name=body.name,
        scope=body.scope,
        token_hash=hash_token(request.app.state.secret_key, token),
        created_by=principal.token_id,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    audit(
        session,
        request,
        "tokens.create",
        f"token {row.id}",
        {"name": body.name, "scope": body.scope, "expires_at": _iso(expires_at)},
    )
    session.commit()
    return schemas.ApiTokenCreated.model_validate(row).model_copy(update={"token": token})


@router.get("/tokens", response_model=schemas.ApiTokenList)
def list_tokens(_principal: AdminDep, session: SessionDep):
    return {"tokens": session.scalars(sa.select(ApiToken).order_by(ApiToken.id)).all()}


@router.post(
    "/tokens/{token_id}/revoke",
    response_model=schemas.ApiTokenOut,
    responses={404: {"description": "No such token"}, 409: {"description": "The last admin"}},
)
def revoke_token(token_id: TokenId, request: Request, _principal: AdminDep, session: SessionDep):
    row = session.get(ApiToken, token_id)
    if row is None:
        raise HTTPException(404, detail=f"token {token_id} not found")
    now = utcnow()
    if row.revoked_at is None:
        if row.scope == "admin" and _live_admins(session, now) <= 1:
            raise HTTPException(
                409,
                detail=f"token {token_id} is the last live admin token; create another first",
            )
        row.revoked_at = now
        audit(session, request, "tokens.revoke", f"token {token_id}", {"name": row.name})
        session.commit()
    return row


def _live_admins(session: Session, now) -> int:
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(ApiToken)
        .where(
            ApiToken.scope == "admin",
            ApiToken.revoked_at.is_(None),
            sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
    )


@router.get("/audit", response_model=schemas.AuditPage)
def read_audit(
    _principal: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=schemas.INT64_MAX)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z._]+$")] = None,
):
    """Newest first; page with before_id (the smallest id of the page before)."""
    query = sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return {"events": session.scalars(query).all()}


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat()
