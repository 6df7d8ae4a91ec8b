"""The web dashboard, served by the API process (`saveos server`): see mount()."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from saveos_api.web import auth
from saveos_api.web.deps import PageError
from saveos_api.web.render import STATIC_DIR, page


class Static(StaticFiles):
    """The dashboard's files. vendor/ paths carry the library's version (a new version is a new
    path), so a browser keeps them a year without asking again; our own charts.js and
    style.css change with SaveOS under the same name, so it revalidates them (ETag: 304)."""

    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = (
                "public, max-age=31536000, immutable" if path.startswith("vendor/") else "no-cache"
            )
        return response


def _logged_in(request: Request) -> auth.Operator | None:
    """The operator the page's route had found (web.deps), so that an error page keeps the nav."""
    return getattr(request.state, "operator", None)


def mount(app: FastAPI) -> None:
    from saveos_api.web import login, pages, restore

    app.include_router(login.router)
    app.include_router(pages.router)
    app.include_router(restore.router)
    app.mount("/static", Static(directory=STATIC_DIR), name="static")

    @app.exception_handler(auth.LoginRequired)
    async def _login(request: Request, exc: auth.LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # A form posted with an expired session is not replayed after login: back to its page.
        if request.method != "GET":
            referer = urlsplit(request.headers.get("referer", ""))
            same_site = referer.netloc == request.url.netloc
            target = (referer.path or "/fleet") if same_site else "/fleet"
        url = f"/login?reason={exc.reason}&next={quote(target, safe='')}"
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    @app.exception_handler(auth.Refused)
    async def _refused(request: Request, exc: auth.Refused):
        return page(
            request,
            "error.html",
            {"title": "Refused", "message": exc.message},
            status_code=exc.status_code,
            operator=_logged_in(request),
        )

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError):
        return page(
            request,
            "error.html",
            {"title": exc.title, "message": exc.message},
            status_code=exc.status_code,
            operator=_logged_in(request),
        )
