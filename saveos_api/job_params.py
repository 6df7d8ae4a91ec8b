"""Job parameters on the server: the agent's own allow-list (saveos_agent.job_params, one
definition for both sides), answered as the API's 422 naming the field."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from saveos_agent.job_params import SCHEMAS, JobParamError
from saveos_agent.job_params import validate as _validate

KINDS = tuple(SCHEMAS)


def validate(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return _validate(kind, params)
    except JobParamError as exc:
        loc = ["body", "kind"] if exc.field == "kind" else ["body", "params", exc.field]
        raise HTTPException(
            422, detail=[{"loc": loc, "msg": exc.reason, "type": "value_error"}]
        ) from None
