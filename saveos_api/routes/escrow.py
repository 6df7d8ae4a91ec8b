"""Admin endpoints for escrow proofs: the controller says it opened a host's repository with
the escrowed passphrase and key (or failed to)."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request

from saveos_api import schemas
from saveos_api.audit import audit
from saveos_api.auth import require_admin, require_read
from saveos_api.models import EscrowProof
from saveos_api.routes.admin import ERRORS, NOT_FOUND, AgentId, SessionDep, _get_agent

router = APIRouter(prefix="/api/v1", responses=ERRORS)


@router.post(
    "/agents/{agent_id}/escrow",
    response_model=schemas.EscrowProofOut,
    status_code=201,
    responses=NOT_FOUND,
    dependencies=[Depends(require_admin)],
)
def record_escrow_proof(
    agent_id: AgentId, body: schemas.EscrowProofIn, request: Request, session: SessionDep
):
    agent = _get_agent(session, agent_id)
    proof = EscrowProof(
        agent_id=agent_id,
        duration_s=round((body.finished_at - body.started_at).total_seconds(), 3),
        **body.model_dump(),
    )
    session.add(proof)
    audit(
        session,
        request,
        "escrow.proof",
        f"agent {agent.id} ({agent.name})",
        {"method": body.method, "result": body.result},
    )
    session.commit()
    return proof


@router.get(
    "/agents/{agent_id}/escrow",
    response_model=list[schemas.EscrowProofOut],
    responses=NOT_FOUND,
    dependencies=[Depends(require_read)],
)
def list_escrow_proofs(
    agent_id: AgentId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
):
    _get_agent(session, agent_id)
    return session.scalars(
        sa.select(EscrowProof)
        .where(EscrowProof.agent_id == agent_id)
        .order_by(EscrowProof.finished_at.desc(), EscrowProof.id.desc())
        .limit(limit)
    ).all()
