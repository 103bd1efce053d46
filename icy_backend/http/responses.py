"""The business-route envelope ``{"data", "message", "error"}`` (SPEC §4) and typed API errors."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


class JSONBody(JSONResponse):
    """Compact JSON, UTF-8, no NaN (a float NaN on the wire is a bug)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def envelope(
    data: Any = None,
    *,
    message: str | None = None,
    error: str | None = None,
    errors: list[dict[str, str]] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONBody:
    """Build an enveloped response; ``message``/``error`` are omitted when empty."""
    body: dict[str, Any] = {"data": data}
    if message:
        body["message"] = message
    if error:
        body["error"] = error
    if errors:
        body["errors"] = errors
    body.update(extra)
    return JSONBody(body, status_code=status_code, headers=headers)


class ApiError(Exception):
    """Raise from a handler to answer with the envelope. Texts must be safe to show (no URLs, SQL, secrets)."""

    def __init__(
        self,
        status_code: int,
        error: str,
        message: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.errors = errors
        self.headers = headers

    def response(self) -> JSONBody:
        return envelope(
            None,
            message=self.message,
            error=self.error,
            errors=self.errors,
            status_code=self.status_code,
            headers=self.headers,
        )


def field_error(field: str, msg: str, *, message: str = "Invalid request") -> ApiError:
    """A 400 with one field error."""
    return ApiError(400, "invalid_request", message, errors=[{"field": field, "msg": msg}])
