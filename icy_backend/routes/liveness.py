"""Liveness: the event loop answers. Never touches the database or the network."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route


async def healthz(request: Request) -> JSONResponse:
    lifecycle = getattr(request.state, "lifecycle", None)
    dead = lifecycle.dead_parts() if lifecycle is not None else []
    if dead:
        # Names of our own loops only (e.g. "job_scheduler"): safe to show, useful to the operator.
        return JSONResponse({"message": "unhealthy", "failed": dead}, status_code=503)
    return JSONResponse({"message": "ok"})


routes: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/livez", healthz, methods=["GET"]),
]
