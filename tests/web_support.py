"""Helpers for the dashboard tests: log in through the form, read CSRF tokens off pages."""

from __future__ import annotations

import re

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client, token: str, next_path: str = "/fleet"):
    """Log in through the real form (login CSRF cookie + field); returns the final response."""
    form = client.get("/login", params={"next": next_path})
    assert form.status_code == 200
    return client.post(
        "/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": next_path},
        follow_redirects=False,
    )
