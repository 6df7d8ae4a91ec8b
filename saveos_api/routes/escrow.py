"""Admin endpoints for escrow proofs: the controller says it opened a host's repository with
the escrowed passphrase and key (or failed to)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from saveos_api import schemas
from saveos_api.audit import audit
from saveos_api.deps import (
    ADMIN,
    NOT_FOUND,
    READ,
    AgentId,
    SessionDep,
    admin_router,
    get_agent_or_404,
    newest_of_agent,
)
from saveos_api.models import EscrowProof

router = admin_router("escrow", scope=None)  # recording is admin, reading is read


@router.post(
    "/agents/{agent_id}/escrow",
    response_model=schemas.EscrowProofOut,
    status_code=201,
    responses=NOT_FOUND,
    dependencies=ADMIN,
)
def record_escrow_proof(
    agent_id: AgentId, body: schemas.EscrowProofIn, request: Request, session: SessionDep
):
    agent = get_agent_or_404(session, agent_id)
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
    dependencies=READ,
)
def list_escrow_proofs(
    agent_id: AgentId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
):
    return newest_of_agent(session, EscrowProof, agent_id, limit)
