"""Parse a JSON request body into a pydantic model, with 400 + ``errors`` on malformed JSON or wrong types."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from icy_backend.http.responses import ApiError

M = TypeVar("M", bound=BaseModel)


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Field errors named by their JSON key; the rejected input is never echoed."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        out.append({"field": field, "msg": err["msg"]})
    return out


async def read_json(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_request", "Malformed JSON body", errors=[{"field": "body", "msg": "malformed JSON"}]
        ) from None
    if not isinstance(data, dict):
        raise ApiError(
            400,
            "invalid_request",
            "Body must be a JSON object",
            errors=[{"field": "body", "msg": "expected an object"}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", "Invalid request body", errors=validation_errors(exc)) from None
