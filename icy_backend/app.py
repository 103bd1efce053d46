"""The app factory: wires settings, metrics, database, clients, health, domain services and jobs.

Nothing imports this module except the CLI and the tests.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from icy_backend.db.engine import make_engine
from icy_backend.db.migrate import upgrade
from icy_backend.http.responses import ApiError, envelope
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from icy_backend.metrics.endpoint import metrics_route
from icy_backend.middleware.stack import middleware_stack
from icy_backend.routes import liveness
from icy_backend.settings import Settings

log = logging.getLogger("icy_backend.app")

_STATUS_ERRORS = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = _STATUS_ERRORS.get(exc.status_code, "Request failed")
    return envelope(None, error=error, status_code=exc.status_code, headers=dict(exc.headers or {}))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


def app_routes(metrics: Metrics, settings: Settings) -> list[BaseRoute]:
    token = settings.METRICS_TOKEN.get_secret_value() if settings.METRICS_TOKEN else None
    return [*liveness.routes, metrics_route(metrics, token)]


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> Starlette:
    """Build the ASGI app. Components are created in the lifespan and handed to routes via ``request.state``."""
    metrics = metrics or Metrics(make_registry())
    lifecycle = Lifecycle()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        engine = make_engine(settings)
        try:
            if settings.APP_ENV in ("local", "test"):
                await upgrade(engine)
            state: dict[str, Any] = {
                "settings": settings,
                "metrics": metrics,
                "lifecycle": lifecycle,
                "engine": engine,
            }
            lifecycle.mark_started()
            log.info("icy-backend started (env=%s)", settings.APP_ENV)
            try:
                yield state
            finally:
                lifecycle.begin_drain()
        finally:
            await engine.dispose()
            log.info("icy-backend stopped")

    app = Starlette(
        routes=app_routes(metrics, settings),
        middleware=middleware_stack(settings, metrics),
        exception_handlers={HTTPException: _http_exception, ApiError: _api_error},
        lifespan=lifespan,
    )
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    app.state.settings = settings
    return app
