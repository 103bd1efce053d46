"""The app factory: wires settings, metrics, database, clients, health, domain services and jobs.

Nothing imports this module except the CLI and the tests.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from checks.service import build_health
from icy_backend.breakers import Breakers
from icy_backend.clients.factory import open_clients
from icy_backend.db.engine import make_engine
from icy_backend.db.migrate import upgrade
from icy_backend.domain.oracle import OracleService
from icy_backend.domain.wallet import check_wallet_matches_treasury
from icy_backend.http.responses import ApiError, envelope
from icy_backend.http.unavailable import EXCEPTION_HANDLERS
from icy_backend.job_bodies import build_job_bodies
from icy_backend.lifecycle import Lifecycle, closing_within
from icy_backend.metrics import Metrics, make_registry
from icy_backend.metrics.endpoint import metrics_route
from icy_backend.middleware.stack import middleware_stack
from icy_backend.routes import health, jobs_health, liveness, openapi, oracle, swap, swap_info, transactions
from icy_backend.settings import Settings
from jobs.definitions import build_job_definitions
from jobs.runtime import JobRuntime

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
    return [
        *liveness.routes,
        *health.routes,
        *jobs_health.routes,
        metrics_route(metrics, token),
        *oracle.routes,
        *swap_info.routes,
        *swap.routes,
        *transactions.routes,
        *openapi.routes,
    ]


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    run_jobs: bool = True,
) -> Starlette:
    """Build the ASGI app. Components are created in the lifespan and handed to routes via ``request.state``.

    ``transport`` points every outbound client at one ASGI app (tests hand in the simulators); ``run_jobs=False``
    leaves the scheduler out (tests that drive jobs themselves).
    """
    metrics = metrics or Metrics(make_registry())
    lifecycle = Lifecycle()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Resources (engine, clients) outlive the task group: background work is cancelled and unwound first;
        # their closing is bounded (SHUTDOWN_CLOSE_SECONDS, part of the shutdown budget).
        async with closing_within() as resources:
            state = await _open(settings, metrics, lifecycle, resources, transport, run_jobs)
            async with anyio.create_task_group() as tg:
                if state["sandbox"] is not None:
                    await tg.start(state["sandbox"].run)
                await tg.start(state["health"].run)  # stale-while-revalidate and scrape-triggered refreshes
                await tg.start(state["jobs"].run)
                lifecycle.mark_started()
                log.info("icy-backend started (env=%s, role=%s)", state["settings"].APP_ENV, state["jobs"].role)
                try:
                    yield state
                finally:
                    lifecycle.begin_drain()
                    log.info("icy-backend stopping")
                    tg.cancel_scope.cancel()
        log.info("icy-backend stopped")

    app = Starlette(
        routes=app_routes(metrics, settings),
        middleware=middleware_stack(settings, metrics),
        exception_handlers={HTTPException: _http_exception, ApiError: _api_error, **EXCEPTION_HANDLERS},
        lifespan=lifespan,
    )
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    app.state.settings = settings
    return app


async def _open(
    settings: Settings,
    metrics: Metrics,
    lifecycle: Lifecycle,
    stack: contextlib.AsyncExitStack,
    transport: httpx.AsyncBaseTransport | None,
    run_jobs: bool,
) -> dict[str, Any]:
    """Open the resources and build the services; nothing runs in the background yet."""
    sandbox = None
    sim_base_url = None
    if transport is None and settings.sandbox_enabled:
        from icy_backend.sandbox import SANDBOX_BASE_URL, Sandbox

        sandbox = Sandbox(settings)
        sandbox.reset_database()
        settings = sandbox.settings
        transport, sim_base_url = sandbox.transport, SANDBOX_BASE_URL
    check_wallet_matches_treasury(settings)

    engine = make_engine(settings)
    stack.push_async_callback(engine.dispose)
    if settings.APP_ENV in ("local", "test"):
        with anyio.fail_after(settings.DB_CONNECT_TIMEOUT_SECONDS * 3 + 10):
            await upgrade(engine)
    if sandbox is not None:
        await sandbox.seed_database(engine)

    breakers = Breakers(settings, metrics)
    clients = await stack.enter_async_context(
        open_clients(settings, metrics, breakers, transport=transport, sim_base_url=sim_base_url)
    )
    oracle = OracleService(settings, metrics, engine, clients)
    health_service = build_health(settings, metrics, lifecycle, engine, clients, breakers)
    bodies = build_job_bodies(settings, metrics, engine, clients, oracle) if run_jobs else {}
    runtime = JobRuntime(settings, metrics, engine, lifecycle, clients.webhook, build_job_definitions(settings, bodies))
    return {
        "settings": settings,
        "metrics": metrics,
        "lifecycle": lifecycle,
        "engine": engine,
        "breakers": breakers,
        "clients": clients,
        "health": health_service,
        "oracle": oracle,
        "jobs": runtime,
        "sandbox": sandbox,
    }
