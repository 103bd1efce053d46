"""Infrastructure failures that reach the app's edge become 503 envelopes naming only a class.

A route that does not map a database outage or an upstream failure itself still answers a clean
``503 {"error": "database_unavailable"}`` (or the upstream's class, with ``Retry-After`` for an open breaker), not
a 500 with a traceback: these are conditions that clear, not bugs. The full error goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import exc as sa_exc
from starlette.requests import Request
from starlette.responses import Response

from icy_backend.clients.errors import CircuitOpenError, UpstreamError
from icy_backend.http.responses import envelope

log = logging.getLogger("icy_backend.errors")

DATABASE_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    # No traceback: an outage is an expected condition; the class and message (parameters hidden) say enough.
    log.warning("database unavailable in %s %s: %s: %s", request.method, _route(request), type(exc).__name__, exc)
    return envelope(None, error="database_unavailable", message="Database unavailable", status_code=503)


async def upstream_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UpstreamError)
    log.warning("upstream %s unavailable in %s: %s", exc.service, _route(request), exc.error_class)
    headers = None
    if isinstance(exc, CircuitOpenError) and exc.retry_after:
        headers = {"Retry-After": str(max(1, int(exc.retry_after)))}
    return envelope(None, error=exc.error_class, message="Upstream unavailable", status_code=503, headers=headers)


async def connection_unavailable(request: Request, exc: Exception) -> Response:
    if _raised_by_database_driver(exc):
        return await database_unavailable(request, exc)
    log.warning("connection failure in %s %s: %s: %s", request.method, _route(request), type(exc).__name__, exc)
    return envelope(None, error="service_unavailable", message="Service unavailable", status_code=503)


def _raised_by_database_driver(exc: BaseException) -> bool:
    """asyncpg raises plain ``OSError``/``TimeoutError`` when it cannot connect; its frames say where it came from."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


_DRIVER_MODULES = ("asyncpg", "aiosqlite", "sqlalchemy")


def _route(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", "<unmatched>")


Handler = Callable[[Request, Exception], Awaitable[Response]]

EXCEPTION_HANDLERS: dict[type[Exception], Handler] = {
    **dict.fromkeys(DATABASE_UNAVAILABLE, database_unavailable),
    UpstreamError: upstream_unavailable,
    # asyncpg raises these directly on connect (refused, connect timeout) before SQLAlchemy wraps anything.
    OSError: connection_unavailable,
    TimeoutError: connection_unavailable,
}
