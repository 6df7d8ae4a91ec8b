"""What every dashboard route depends on besides saveos_api/deps.py: the logged-in operator,
page errors."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from saveos_api.deps import SessionDep
from saveos_api.web import auth

__all__ = ["OperatorDep", "PageError", "SessionDep"]


def _operator(request: Request, session: SessionDep) -> auth.Operator:
    operator = auth.current_operator(request, session)
    # An error page raised after this still shows the logged-in operator's nav (web/__init__).
    request.state.operator = operator
    return operator


OperatorDep = Annotated[auth.Operator, Depends(_operator)]


class PageError(Exception):
    """Shown as an error page: what went wrong and that nothing was changed."""

    def __init__(self, status_code: int, title: str, message: str):
        super().__init__(message)
        self.status_code, self.title, self.message = status_code, title, message
