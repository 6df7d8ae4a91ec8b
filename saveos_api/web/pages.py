"""The dashboard's pages: server-rendered HTML that reads without JavaScript; htmx only
refreshes the parts that change (jobs, listings) and uPlot draws the charts. Here: the fleet, a
host, the jobs, the settings; sessions are in login.py, browsing and restoring in restore.py."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Form, Query, Request
from saveos_rules import SEVERITY, STATUSES
from sqlalchemy.engine import make_url

from saveos_api.jobs import agents_with_label
from saveos_api.models import Agent, AgentToken, Job, utcnow
from saveos_api.web import auth, queries
from saveos_api.web.deps import OperatorDep, PageError, SessionDep
from saveos_api.web.render import page
from saveos_api.web.shared import Csrf, agent_by_name, live_agent, queue_as_operator, see_other

router = APIRouter(include_in_schema=False)
# The kinds an operator queues from the fleet or a host page (restore and list have their own).
ACTION_KINDS = ("backup", "check", "drill")


# ---- fleet -------------------------------------------------------------------------------


@router.get("/fleet")
def fleet(
    request: Request,
    session: SessionDep,
    operator: OperatorDep,
    q: Annotated[str, Query(max_length=253)] = "",
    status: Annotated[list[str] | None, Query(max_length=len(STATUSES))] = None,
    label: Annotated[str, Query(max_length=400)] = "",
    sort: Annotated[str, Query(max_length=20)] = "status",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    page_no: Annotated[int, Query(alias="page", ge=1, le=10**6)] = 1,
    per: Annotated[int, Query(ge=1, le=1000)] = 50,
):
    now = utcnow()
    statuses = [s for s in (status or []) if s]
    filters = {"q": q, "status": statuses, "label": label, "sort": sort, "order": order, "per": per}
    try:
        data = queries.fleet_page(
            session,
            now,
            q=q.strip(),
            statuses=statuses,
            label=label.strip(),
            sort=sort,
            descending=order == "desc",
            page=page_no,
            per=per,
        )
        error = None
    except queries.BadFilter as exc:
        data, error = None, str(exc)

    def link(**changes) -> str:
        values = {**filters, "page": data["page"] if data else 1, **changes}
        return "/fleet?" + urlencode(
            {k: v for k, v in values.items() if v not in ("", None, [])}, doseq=True
        )

    return page(
        request,
        "fleet.html",
        {
            "data": data,
            "error": error,
            "filters": filters,
            "statuses": sorted(STATUSES, key=lambda s: SEVERITY.get(s, -1)),  # worst first
            "sorts": list(queries.SORTS),
            "pers": queries.PER_PAGE,
            "link": link,
            "kinds": ACTION_KINDS,
        },
        status_code=400 if error else 200,
        operator=operator,
    )


@router.post("/fleet/jobs")
def queue_for_label(
    request: Request,
    session: SessionDep,
    operator: OperatorDep,
    kind: Annotated[str, Form(max_length=16)],
    label: Annotated[str, Form(max_length=400)] = "",
    csrf: Csrf = None,
):
    auth.check_csrf(request, csrf)
    auth.require_scope(operator, "operate")
    if kind not in ACTION_KINDS:
        raise PageError(422, "Unknown action", f"{kind!r} is not one of {', '.join(ACTION_KINDS)}.")
    try:
        wanted = queries.parse_label(label.strip())
    except queries.BadFilter as exc:
        raise PageError(422, "Bad label", f"{exc}; nothing was queued.") from None
    if wanted is None:
        raise PageError(422, "No label", "Give a label KEY=VALUE; nothing was queued.")
    ids = agents_with_label(session, *wanted)
    if not ids:
        raise PageError(
            404, "No such hosts", f"No live host has the label {label.strip()}; nothing queued."
        )
    jobs = queue_as_operator(request, session, operator, kind, ids)
    return see_other("/jobs?" + urlencode({"queued": ",".join(str(j.id) for j in jobs)}))


# ---- host --------------------------------------------------------------------------------


@router.get("/hosts/{name}")
def host(
    request: Request,
    name: str,
    session: SessionDep,
    operator: OperatorDep,
    spage: Annotated[int, Query(ge=1, le=10**6)] = 1,
):
    agent = agent_by_name(session, name)
    now = utcnow()
    history = queries.host_history(session, agent.id, spage)
    base = f"/hosts/{quote(agent.name)}"
    return page(
        request,
        "host.html",
        {
            "agent": agent,
            "row": queries.host_overview(session, agent, now),
            "kinds": ACTION_KINDS,
            "job_rows": [(job, agent.name) for job in history.pop("jobs")],
            "snapshot_link": lambda page: f"{base}?spage={page}#snapshots",
            **history,
        },
        operator=operator,
    )


@router.post("/hosts/{name}/jobs")
def queue_for_host(
    request: Request,
    name: str,
    session: SessionDep,
    operator: OperatorDep,
    kind: Annotated[str, Form(max_length=16)],
    csrf: Csrf = None,
):
    auth.check_csrf(request, csrf)
    auth.require_scope(operator, "operate")
    agent = live_agent(session, name)
    if kind not in ACTION_KINDS:
        raise PageError(422, "Unknown action", f"{kind!r} is not one of {', '.join(ACTION_KINDS)}.")
    (job,) = queue_as_operator(request, session, operator, kind, [agent.id])
    return see_other(f"/jobs/{job.id}")


# ---- jobs --------------------------------------------------------------------------------


@router.get("/jobs")
def jobs(
    request: Request,
    session: SessionDep,
    operator: OperatorDep,
    host: Annotated[str, Query(max_length=253)] = "",
    queued: Annotated[str, Query(max_length=20000)] = "",
    partial: bool = False,
):
    agent = agent_by_name(session, host) if host else None
    board = queries.jobs_board(session, agent)
    just_queued = [int(x) for x in queued.split(",") if x.isdigit()][:10000]
    context = {
        "board": board,
        "host": host,
        "just_queued": len(just_queued),
        "active": bool(board["queued"] or board["running"]),
        "poll_url": "/jobs?" + urlencode({"partial": 1, **({"host": host} if host else {})}),
    }
    template = "_jobs_live.html" if partial else "jobs.html"
    return page(request, template, context, operator=operator)


@router.get("/jobs/{job_id}")
def job(
    request: Request, job_id: int, session: SessionDep, operator: OperatorDep, partial: bool = False
):
    found = session.execute(
        sa.select(Job, Agent.name).join(Agent, Agent.id == Job.agent_id).where(Job.id == job_id)
    ).first()
    if found is None:
        raise PageError(404, "Unknown job", f"There is no job {job_id}.")
    context = {"job": found[0], "host": found[1]}
    template = "_job_live.html" if partial else "job.html"
    return page(request, template, context, operator=operator)


# ---- settings ----------------------------------------------------------------------------


@router.get("/settings")
def settings_page(request: Request, session: SessionDep, operator: OperatorDep):
    settings = request.app.state.settings
    url = make_url(settings.effective_database_url).render_as_string(hide_password=True)
    tokens = session.execute(
        sa.select(
            sa.func.count().filter(AgentToken.revoked_at.is_(None)),
            sa.func.count().filter(AgentToken.revoked_at.is_not(None)),
        )
    ).one()
    admin_from = (
        "SAVEOS_ADMIN_TOKEN"
        if settings.admin_token is not None
        else str(settings.effective_admin_token_file)
    )
    rows = [
        ("data directory", str(settings.data_dir)),
        ("database", url),
        ("default heartbeat interval", f"{settings.heartbeat_interval_s} s"),
        ("default backup interval", f"{settings.backup_interval_s} s"),
        ("default backup grace", f"{settings.backup_grace_s} s"),
        ("job timeout", f"{settings.job_timeout_s} s"),
        ("largest request body", f"{settings.max_body_bytes} bytes"),
        ("heartbeats kept per agent", str(settings.heartbeat_history)),
        ("database pool size", str(settings.db_pool_size)),
        ("dashboard session lifetime", f"{settings.web_session_ttl_s} s"),
    ]
    tls = "on (HTTPS)" if request.url.scheme == "https" else "off: plain HTTP"
    tls_rows = queries.tls_certificate(settings.data_dir)
    return page(
        request,
        "settings.html",
        {
            "rows": rows,
            "tls": tls,
            "admin_from": admin_from,
            "agent_tokens_live": tokens[0],
            "agent_tokens_revoked": tokens[1],
            "tls_rows": tls_rows,
            "operator_tokens": queries.operator_tokens(session),
            "channels": queries.alert_channels(session),
        },
        operator=operator,
    )
