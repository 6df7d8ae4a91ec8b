"""What route handlers depend on: the session, the authenticated caller, path parameters."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Path
from sqlalchemy.orm import Session

from saveos_api import schemas
from saveos_api.auth import (
    AgentPrincipal,
    ApiPrincipal,
    require_admin,
    require_agent,
    require_operate,
    require_read,
    require_scope,
)
from saveos_api.db import get_session
from saveos_api.models import Agent

# Every agent and admin router is created with this prefix (deps.API_PREFIX) and a tag;
# /health, /livez and /metrics are not under it. Given to APIRouter(), not include_router():
# this FastAPI keeps an included route's own path in scope["route"], which the metrics use as
# the route label, so include_router(prefix=...) would label /api/v1/agents/1 "/agents/{id}".
API_PREFIX = "/api/v1"

SessionDep = Annotated[Session, Depends(get_session)]
AgentDep = Annotated[AgentPrincipal, Depends(require_agent)]
# Operators' tokens: read < operate < admin (auth.require_scope; the principal is for audit()).
READ = [Depends(require_read)]
OPERATE = [Depends(require_operate)]
ADMIN = [Depends(require_admin)]
AdminDep = Annotated[ApiPrincipal, Depends(require_admin)]
AgentId = Annotated[int, Path(ge=1, le=schemas.INT64_MAX)]
JobId = Annotated[int, Path(ge=1, le=schemas.INT64_MAX)]

ADMIN_ERRORS = {
    401: {"description": "Missing, malformed or unknown token"},
    403: {"description": "An agent token, or a token without the endpoint's scope"},
    422: {"description": "Invalid input; the detail names the field"},
}
NOT_FOUND = {404: {"description": "No such agent or job"}}


def admin_router(tag: str, scope: str | None = "admin") -> APIRouter:
    """A router of operator endpoints: every route needs a token with `scope` (None: each
    route names its own, with dependencies=READ / OPERATE / ADMIN)."""
    return APIRouter(
        prefix=API_PREFIX,
        tags=[tag],
        dependencies=[Depends(require_scope(scope))] if scope else [],
        responses=ADMIN_ERRORS,
    )


def get_agent_or_404(session: Session, agent_id: int) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise HTTPException(404, detail=f"agent {agent_id} not found")
    return agent


def newest_of_agent(session: Session, model, agent_id: int, limit: int) -> list:
    """An agent's `limit` newest rows of a table of finished runs (escrow proofs, central
    runs): by finished_at, then id, newest first; 404 for an unknown agent."""
    get_agent_or_404(session, agent_id)
    return session.scalars(
        sa.select(model)
        .where(model.agent_id == agent_id)
        .order_by(model.finished_at.desc(), model.id.desc())
        .limit(limit)
    ).all()
