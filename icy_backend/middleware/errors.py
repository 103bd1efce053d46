"""Outermost error boundary: any unhandled exception becomes a 500 envelope without details."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icy_backend.http.responses import ApiError, envelope

log = logging.getLogger("icy_backend.errors")


class ErrorEnvelopeMiddleware:
    """Turn unhandled exceptions into ``500 {"data": null, "error": "Internal server error"}``.

    The exception is logged (the log formatter redacts URLs and secrets); the body never carries its text. If the
    response had already started, the connection is left for the server to close.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ApiError as exc:
            if started:
                raise
            await exc.response()(scope, receive, send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), _route(scope))
            if started:
                return
            response = envelope(None, error="Internal server error", status_code=500)
            await response(scope, receive, send)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", "<unmatched>")
