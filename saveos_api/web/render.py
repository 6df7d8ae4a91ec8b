"""Jinja2 templates (autoescaped) and the filters the pages share."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from saveos_rules import age_text, ago_text

from saveos_api.models import utcnow
from saveos_api.web import auth

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
HTMX = "vendor/htmx-2.0.11/htmx.min.js"
UPLOT_JS = "vendor/uplot-1.6.32/uPlot.iife.min.js"
UPLOT_CSS = "vendor/uplot-1.6.32/uPlot.min.css"
# Served with every page: scripts and styles only from this server, no framing, forms only to it.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def size(value: int | None) -> str:
    """Bytes in decimal units, like `saveos status`: '1.2 GB'."""
    if value is None:
        return "–"
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(amount) < 1000 or unit == "PB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return str(value)


def ts(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    return ago_text(None if value is None else ((now or utcnow()) - value).total_seconds())


def duration(seconds: float | None) -> str:
    return "–" if seconds is None else age_text(seconds)


def as_json(value: Any) -> Markup:
    """JSON safe inside <script type="application/json"> (no '</' can close the element)."""
    text = orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()
    escaped = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(escaped)  # noqa: S704 - escaped above: no markup can survive


env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.do"],
)
env.filters.update(size=size, ts=ts, ago=ago, duration=duration, as_json=as_json)
env.globals.update(htmx=HTMX, uplot_js=UPLOT_JS, uplot_css=UPLOT_CSS)


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
    operator: auth.Operator | None = None,
) -> HTMLResponse:
    values = {
        "request": request,
        "operator": operator,
        "csrf": auth.csrf_token(request) if operator else "",
        "now": utcnow(),
        **(context or {}),
    }
    html = env.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers=security_headers())


def security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
