"""The apps the HTTP overhead bench compares: one small JSON route, with and without instrumentation."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from icy_backend.metrics import Metrics, make_registry
from icy_backend.metrics.middleware import HttpMetricsMiddleware

PATH = "/api/v1/oracle/circulated-icy"  # a protected route: the stack's auth really checks the key
API_KEY = "bench-api-key-0123456789abcdef"
BODY = {"data": {"value": "1000000000000000000000", "decimal": 18}}


async def handler(request: Request) -> Response:
    return JSONResponse(BODY)


def _routes() -> list[Route]:
    return [Route(PATH, handler, methods=["GET"])]


def starlette_bare() -> ASGIApp:
    return Starlette(routes=_routes())


def starlette_metrics() -> ASGIApp:
    metrics = Metrics(make_registry())
    return Starlette(routes=_routes(), middleware=[Middleware(HttpMetricsMiddleware, metrics=metrics)])


def stack_description() -> str:
    try:
        import icy_backend.middleware.stack  # noqa: F401
    except ImportError:
        return "HttpMetricsMiddleware + CORSMiddleware (middleware_stack not available)"
    return "middleware_stack(settings, metrics): errors, metrics, CORS, body limit, API-key auth"


def _stack(metrics: Metrics) -> list[Middleware]:
    try:
        from icy_backend.middleware.stack import middleware_stack
    except ImportError:  # before the lead's stack existed
        from starlette.middleware.cors import CORSMiddleware

        return [
            Middleware(HttpMetricsMiddleware, metrics=metrics),
            Middleware(CORSMiddleware, allow_origins=["https://app.example"], allow_methods=["GET"]),
        ]
    from icy_backend.middleware.auth import ApiKeyMiddleware
    from icy_backend.settings import load_settings

    # dev settings (prod needs real chain settings); the stack enables auth only in prod, so add it the same way.
    settings = load_settings(
        {"APP_ENV": "dev", "API_KEY": API_KEY, "ALLOWED_ORIGINS": "https://app.example"}, env_file=None
    )
    stack = middleware_stack(settings, metrics)
    if not any(getattr(m, "cls", None) is ApiKeyMiddleware for m in stack):
        stack.append(Middleware(ApiKeyMiddleware, api_key=API_KEY))
    return stack


def starlette_stack() -> ASGIApp:
    return Starlette(routes=_routes(), middleware=_stack(Metrics(make_registry())))


def starlette_exporter() -> ASGIApp:
    from starlette_exporter import PrometheusMiddleware

    # Its metrics live on the global registry (shared class-level cache), which is what it supports.
    return Starlette(routes=_routes(), middleware=[Middleware(PrometheusMiddleware, app_name="bench")])


def fastapi_bare() -> ASGIApp:
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route(PATH, handler, methods=["GET"])
    return app


def fastapi_instrumentator() -> ASGIApp:
    from prometheus_fastapi_instrumentator import Instrumentator

    app = fastapi_bare()
    Instrumentator(registry=CollectorRegistry()).instrument(app)  # type: ignore[arg-type]
    return app


class _RawApp:
    """A minimal ASGI app (no router): isolates the middleware's own cost. Sets ``scope["route"]`` as a router would."""

    def __init__(self) -> None:
        self.route = _routes()[0]
        self.body = bytes(JSONResponse(BODY).body)
        self.headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def raw_bare() -> ASGIApp:
    return _RawApp()


def raw_metrics() -> ASGIApp:
    return HttpMetricsMiddleware(_RawApp(), Metrics(make_registry()))


VARIANTS: dict[str, Callable[[], ASGIApp]] = {
    "starlette_bare": starlette_bare,
    "starlette_metrics": starlette_metrics,
    "starlette_stack": starlette_stack,
    "starlette_exporter": starlette_exporter,
    "fastapi_bare": fastapi_bare,
    "fastapi_instrumentator": fastapi_instrumentator,
    "raw_bare": raw_bare,
    "raw_metrics": raw_metrics,
}
