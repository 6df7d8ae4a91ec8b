"""What the dashboard's page modules share: a host by name (or a 404 page), jobs queued as the
logged-in operator, the redirect after a form, the CSRF form field."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import Form, Request
from fastapi.responses import RedirectResponse
from saveos_agent.job_params import JobParamError

from saveos_api.audit import audit
from saveos_api.jobs import queue_jobs
from saveos_api.models import Agent
from saveos_api.web import auth
from saveos_api.web.deps import PageError

Csrf = Annotated[str | None, Form(alias=auth.CSRF_FIELD)]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def agent_by_name(session, name: str) -> Agent:
    agent = session.scalars(sa.select(Agent).where(Agent.name == name)).first()
    if agent is None:
        raise PageError(404, "Unknown host", f"There is no host named {name!r}.")
    return agent


def live_agent(session, name: str) -> Agent:
    agent = agent_by_name(session, name)
    if agent.decommissioned_at is not None:
        raise PageError(
            409, "Host decommissioned", f"{name} is decommissioned: it runs no jobs any more."
        )
    return agent


def queue_as_operator(
    request: Request, session, operator: auth.Operator, kind: str, ids, params=None
):
    """Queue through the API's one path (the kind's parameter allow-list, the same audit log
    as POST /api/v1/jobs), as the logged-in operator's token."""
    who = auth.principal(request, operator)
    try:
        jobs = queue_jobs(session, kind, ids, params, f"{who.actor} (dashboard)", commit=False)
    except JobParamError as exc:
        raise PageError(422, "Cannot queue that", f"{exc.message}; nothing was queued.") from None
    clean = jobs[0].params if jobs else params
    detail = {"jobs": [j.id for j in jobs], "params": clean, "note": "dashboard"}
    audit(session, request, f"jobs.{kind}", ",".join(str(i) for i in ids), detail)
    session.commit()
    return jobs
