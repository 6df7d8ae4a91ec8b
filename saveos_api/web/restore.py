"""The dashboard's restore: pick a host's archive, browse it a directory at a time (each listing
a `list` job the agent runs), and queue a restore of the chosen paths."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request

from saveos_api.models import Agent, Job
from saveos_api.web import auth, browse, queries
from saveos_api.web.deps import OperatorDep, PageError, SessionDep
from saveos_api.web.render import page
from saveos_api.web.shared import Csrf, agent_by_name, live_agent, queue_as_operator, see_other

router = APIRouter(include_in_schema=False)


@router.get("/hosts/{name}/restore")
def restore_start(
    request: Request,
    name: str,
    session: SessionDep,
    operator: OperatorDep,
    apage: Annotated[int, Query(ge=1, le=10**6)] = 1,
):
    agent = agent_by_name(session, name)
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
    agent = live_agent(session, name)
    _known_archive(session, agent, archive)
    try:
        folder = browse.archive_path(path if path is not None else here)
        params = browse.list_params(archive, folder, offset if path is None else 0)
    except browse.BadPath as exc:
        raise PageError(422, "Bad path", f"{exc}; nothing was queued.") from None
    job = browse.reusable_listing(session, agent.id, params)
    if job is None:
        (job,) = queue_as_operator(request, session, operator, "list", [agent.id], params)
    return see_other(f"/hosts/{quote(agent.name)}/browse/{job.id}")


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
    agent = agent_by_name(session, name)
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
    agent = live_agent(session, name)
    _known_archive(session, agent, archive)
    try:
        chosen = [browse.archive_path(p) for p in (paths or [])]
        if not chosen or "" in chosen:
            raise browse.BadPath("select at least one file or folder (not the whole archive)")
        where = browse.restore_target(target)
    except browse.BadPath as exc:
        raise PageError(422, "Cannot restore", f"{exc}; nothing was queued.") from None
    params = {"archive": archive, "paths": chosen, "target": where}
    (job,) = queue_as_operator(request, session, operator, "restore", [agent.id], params)
    return see_other(f"/jobs/{job.id}")
