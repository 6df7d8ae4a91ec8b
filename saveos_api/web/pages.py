"""The dashboard's pages: server-rendered HTML that reads without JavaScript; htmx only
refreshes the parts that change (jobs, listings) and uPlot draws the charts."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from saveos_agent.job_params import JobParamError
from saveos_rules import SEVERITY, STATUSES
from sqlalchemy.engine import make_url

from saveos_api.audit import audit
from saveos_api.jobs import agents_with_label, queue_jobs
from saveos_api.models import Agent, AgentToken, Job, utcnow
from saveos_api.web import auth, browse, queries
from saveos_api.web.deps import OperatorDep, PageError, SessionDep
from saveos_api.web.render import page

router = APIRouter(include_in_schema=False)
# The kinds an operator queues from the fleet or a host page (restore and list have their own).
ACTION_KINDS = ("backup", "check", "drill")
Csrf = Annotated[str | None, Form(alias=auth.CSRF_FIELD)]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _agent(session, name: str) -> Agent:
    agent = session.scalars(sa.select(Agent).where(Agent.name == name)).first()
    if agent is None:
        raise PageError(404, "Unknown host", f"There is no host named {name!r}.")
    return agent


def _live_agent(session, name: str) -> Agent:
    agent = _agent(session, name)
    if agent.decommissioned_at is not None:
        raise PageError(
            409, "Host decommissioned", f"{name} is decommissioned: it runs no jobs any more."
        )
    return agent


def _queue(request: Request, session, operator: auth.Operator, kind: str, ids, params=None):
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


# ---- login -------------------------------------------------------------------------------


@router.get("/")
def root():
    return _see_other("/fleet")


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
    response = _see_other(_safe_next(next))
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
    response = _see_other("/login?reason=logout")
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


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
    jobs = _queue(request, session, operator, kind, ids)
    return _see_other("/jobs?" + urlencode({"queued": ",".join(str(j.id) for j in jobs)}))


# ---- host --------------------------------------------------------------------------------


@router.get("/hosts/{name}")
def host(
    request: Request,
    name: str,
    session: SessionDep,
    operator: OperatorDep,
    spage: Annotated[int, Query(ge=1, le=10**6)] = 1,
):
    agent = _agent(session, name)
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
    agent = _live_agent(session, name)
    if kind not in ACTION_KINDS:
        raise PageError(422, "Unknown action", f"{kind!r} is not one of {', '.join(ACTION_KINDS)}.")
    (job,) = _queue(request, session, operator, kind, [agent.id])
    return _see_other(f"/jobs/{job.id}")


# ---- restore -----------------------------------------------------------------------------


@router.get("/hosts/{name}/restore")
def restore_start(
    request: Request,
    name: str,
    session: SessionDep,
    operator: OperatorDep,
    apage: Annotated[int, Query(ge=1, le=10**6)] = 1,
):
    agent = _agent(session, name)
    return page(
        request,
        "archives.html",
        {"agent": agent, **queries.archives(session, agent.id, apage)},
        operator=operator,
    )


def _known_archive(session, agent: Agent, archive: str):
    snapshot = queries.find_archive(session, agent.id, archive)
    if snapshot is None:
        raise PageError(
            404,
            "Unknown archive",
            f"{agent.name} has no successful archive named {archive!r}; nothing was queued.",
        )
    return snapshot


@router.post("/hosts/{name}/browse")
def browse_queue(
    request: Request,
    name: str,
    session: SessionDep,
    operator: OperatorDep,
    archive: Annotated[str, Form(max_length=255)],
    path: Annotated[str | None, Form(max_length=browse.MAX_PATH)] = None,
    here: Annotated[str, Form(max_length=browse.MAX_PATH)] = "",
    offset: Annotated[int, Form(ge=0, le=10**9)] = 0,
    csrf: Csrf = None,
):
    """List one page of a directory of an archive: reuse a recent listing, else queue one.

    `path`: the folder clicked ('/' the root); without one, another page of `here`."""
    auth.check_csrf(request, csrf)
    auth.require_scope(operator, "operate")  # it runs borg on the host
    agent = _live_agent(session, name)
    _known_archive(session, agent, archive)
    try:
        folder = browse.archive_path(path if path is not None else here)
        params = browse.list_params(archive, folder, offset if path is None else 0)
    except browse.BadPath as exc:
        raise PageError(422, "Bad path", f"{exc}; nothing was queued.") from None
    job = browse.reusable_listing(session, agent.id, params)
    if job is None:
        (job,) = _queue(request, session, operator, "list", [agent.id], params)
    return _see_other(f"/hosts/{quote(agent.name)}/browse/{job.id}")


def _list_job(session, agent: Agent, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.agent_id != agent.id or job.kind != "list":
        raise PageError(404, "Unknown listing", f"{agent.name} has no archive listing {job_id}.")
    return job


@router.get("/hosts/{name}/browse/{job_id}")
def browse_show(
    request: Request,
    name: str,
    job_id: int,
    session: SessionDep,
    operator: OperatorDep,
    partial: bool = False,
):
    agent = _agent(session, name)
    job = _list_job(session, agent, job_id)
    path = job.params.get("path", "")
    context = {
        "agent": agent,
        "job": job,
        "archive": job.params.get("archive"),
        "path": path,
        "parent": browse.parent_of(path),
        "crumbs": browse.crumbs(path),
        "page_size": browse.LIST_PAGE,
    }
    if partial:
        response = page(request, "_browse_wait.html", context, operator=operator)
        if job.state not in ("queued", "running"):
            response.headers["HX-Refresh"] = "true"  # the listing replaces the waiting page
        return response
    return page(request, "browse.html", context, operator=operator)


@router.post("/hosts/{name}/restore")
def restore_queue(
    request: Request,
    name: str,
    session: SessionDep,
    operator: OperatorDep,
    archive: Annotated[str, Form(max_length=255)],
    paths: Annotated[list[str] | None, Form(max_length=browse.MAX_RESTORE_PATHS)] = None,
    target: Annotated[str, Form(max_length=2048)] = "",
    csrf: Csrf = None,
):
    auth.check_csrf(request, csrf)
    auth.require_scope(operator, "operate")
    agent = _live_agent(session, name)
    _known_archive(session, agent, archive)
    try:
        chosen = [browse.archive_path(p) for p in (paths or [])]
        if not chosen or "" in chosen:
            raise browse.BadPath("select at least one file or folder (not the whole archive)")
        where = browse.restore_target(target)
    except browse.BadPath as exc:
        raise PageError(422, "Cannot restore", f"{exc}; nothing was queued.") from None
    params = {"archive": archive, "paths": chosen, "target": where}
    (job,) = _queue(request, session, operator, "restore", [agent.id], params)
    return _see_other(f"/jobs/{job.id}")


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
    agent = _agent(session, host) if host else None
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
