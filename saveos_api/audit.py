"""The audit log: every state-changing call of an operator's token, written in the caller's
transaction (it commits with the change it records, or not at all)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from saveos_api.auth import ApiPrincipal
from saveos_api.models import AuditEvent


def audit(
    session: Session,
    request: Request,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record `action` (e.g. "agents.provision") on `target` by the request's principal.

    Call it before the handler's commit; the principal is the one require_scope() found."""
    principal: ApiPrincipal = request.state.principal
    client = request.client.host if request.client else None
    session.add(
        AuditEvent(
            token_id=principal.token_id,
            actor=principal.actor,
            action=action,
            target=None if target is None else str(target)[:300],
            client=client,
            detail=detail,
        )
    )
