"""A small Starlette app wrapped in the metrics middleware, and a helper to read sample values."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from icy_backend.metrics import Metrics, make_registry
from icy_backend.metrics.middleware import HttpMetricsMiddleware


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def http_series(metrics: Metrics) -> int:
    """Number of samples in the four HTTP families (every series adds at least one)."""
    n = 0
    for family in metrics.registry.collect():
        if family.name.startswith("icy_backend_http_"):
            n += len(family.samples)
    return n


def build_app(metrics: Metrics) -> Starlette:
    async def item(request: Request) -> Response:
        return JSONResponse({"id": request.path_params["item_id"]})

    async def boom(request: Request) -> Response:
        raise RuntimeError("handler failed")

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            # While the body streams the request is still in flight.
            in_flight = sample(metrics, "icy_backend_http_requests_in_flight", method="GET")
            yield f"{in_flight}\n".encode()
            for _ in range(3):
                await anyio.sleep(0)
                yield b"x" * 100

        return StreamingResponse(chunks(), media_type="text/plain")

    async def forever(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                yield b"tick\n"
                await anyio.sleep(0.001)

        return StreamingResponse(chunks(), media_type="text/plain")

    async def create(request: Request) -> Response:
        return JSONResponse({"ok": True}, status_code=201)

    async def thing(request: Request) -> Response:
        return PlainTextResponse("thing")

    routes = [
        Route("/items/{item_id}", item),
        Route("/boom", boom),
        Route("/stream", stream),
        Route("/forever", forever),
        Route("/create", create, methods=["POST"]),
        Mount("/sub/{tenant}", routes=[Route("/things/{thing_id}", thing)]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(HttpMetricsMiddleware, metrics=metrics)])


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(make_registry())


@pytest.fixture
def app(metrics: Metrics) -> Starlette:
    return build_app(metrics)
