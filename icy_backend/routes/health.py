"""Health routes (SPEC §5): ``/readyz``, ``/api/v1/health/db``, ``/api/v1/health/external``.

Handlers read the :class:`checks.service.HealthService` from ``request.state.health``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from checks.render import HEALTH_JSON, Report, to_ietf, to_json, to_verbose
from checks.service import HealthService
from icy_backend.http.responses import JSONBody

_NO_STORE = {"Cache-Control": "no-store"}


def _health(request: Request) -> HealthService:
    health: HealthService = request.state.health
    return health


def _wants_ietf(request: Request) -> bool:
    return HEALTH_JSON in request.headers.get("accept", "").lower()


def _respond(request: Request, report: Report) -> Response:
    if _wants_ietf(request):
        return JSONBody(to_ietf(report), status_code=report.http_status, headers=_NO_STORE, media_type=HEALTH_JSON)
    return JSONBody(to_json(report), status_code=report.http_status, headers=_NO_STORE)


async def readyz(request: Request) -> Response:
    """Ready to serve: started, not draining, database reachable. ``?verbose`` text, ``?exclude=name``."""
    report = await _health(request).readiness(request.query_params.getlist("exclude"))
    if "verbose" in request.query_params:
        return PlainTextResponse(to_verbose(report), status_code=report.http_status, headers=_NO_STORE)
    return _respond(request, report)


async def health_db(request: Request) -> Response:
    return _respond(request, await _health(request).database())


async def health_external(request: Request) -> Response:
    return _respond(request, await _health(request).external())


routes: list[BaseRoute] = [
    Route("/readyz", readyz, methods=["GET"]),
    Route("/api/v1/health/db", health_db, methods=["GET"]),
    Route("/api/v1/health/external", health_external, methods=["GET"]),
]
