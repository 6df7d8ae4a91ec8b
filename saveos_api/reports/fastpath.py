"""The four reports on the fast path (saveos_api/fastpath.py), straight to the writer."""

from __future__ import annotations

from saveos_api.fastpath import FastRoute
from saveos_api.reports.kinds import KINDS, Kind


def _route(kind: Kind) -> FastRoute:
    async def answer(state, token: str, body):
        return await state.reports.submit(token, kind, body)

    return FastRoute(kind.path, kind.schema, answer)


REPORT_ROUTES = tuple(_route(kind) for kind in KINDS)
