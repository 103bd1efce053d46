"""``GET /metrics``: Prometheus text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding`` (SPEC §6).

Rendering (and compression) runs in a worker thread so a large registry never blocks the event loop. When a
token is configured (``METRICS_TOKEN``) the request needs ``Authorization: Bearer <token>``, compared in
constant time; otherwise 401 ``{"error": "Unauthorized"}``. Before rendering, an authorised scrape calls every
``Metrics.scrape_hooks`` entry on the event loop (the health service starts refreshes of stale results there, SPEC
§5 "fresh for Prometheus"); hooks only start work and never wait for it.
"""

from __future__ import annotations

import gzip
import hmac
from collections.abc import Awaitable, Callable

import anyio.to_thread
from prometheus_client.exposition import gzip_accepted
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from icy_backend.metrics.exposition import choose_renderer
from icy_backend.metrics.families import Metrics

METRICS_PATH = "/metrics"
# Level 5 compresses a scrape ~10x, at a fraction of level 9's CPU.
_GZIP_LEVEL = 5


def _authorized(header: str, token: bytes) -> bool:
    scheme, _, credentials = header.partition(" ")
    # Compare even on a wrong scheme so the time taken does not tell which part was wrong.
    ok = hmac.compare_digest(credentials.strip().encode(), token)
    return ok and scheme.lower() == "bearer"


def metrics_endpoint(metrics: Metrics, token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving ``metrics.registry``; ``token`` (if set) is required as a Bearer token."""
    registry = metrics.registry
    expected = token.encode() if token else None

    def render(accept: str, compress: bool) -> tuple[bytes, str]:
        encoder, content_type = choose_renderer(accept)  # prometheus-client's negotiation, a faster encoder
        body = encoder(registry)
        if compress:
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
        return body, content_type

    async def endpoint(request: Request) -> Response:
        if expected is not None and not _authorized(request.headers.get("authorization", ""), expected):
            return JSONResponse({"error": "Unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        for hook in metrics.scrape_hooks:  # e.g. start refreshing stale health results; never waits
            hook()
        compress = gzip_accepted(request.headers.get("accept-encoding", ""))
        body, content_type = await anyio.to_thread.run_sync(render, request.headers.get("accept", ""), compress)
        headers = {
            "Content-Type": content_type,
            "Cache-Control": "no-store",
            "Vary": "Accept, Accept-Encoding",
        }
        if compress:
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers)

    return endpoint


def metrics_route(metrics: Metrics, token: str | None) -> Route:
    """``GET /metrics`` (and HEAD) as a route for the app factory."""
    return Route(METRICS_PATH, metrics_endpoint(metrics, token), methods=["GET"], name="metrics")
