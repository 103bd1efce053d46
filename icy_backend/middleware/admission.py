"""Admission control (SPEC §5 overload): refuse business requests beyond a concurrency cap at once.

A single process that queues every request under overload makes every request slow, including ``/readyz``,
whose database check then misses its deadline: every replica turns unready at the same moment. Instead, a
business request that finds ``MAX_CONCURRENT_REQUESTS`` business requests already in flight is answered at once
with ``503 {"data": null, "error": "overloaded"}`` and ``Retry-After: 1`` (counted in
``icy_backend_requests_refused_total{reason="overloaded"}``), so the event loop keeps time for the probes.

Health, liveness and ``/metrics`` are never counted and never refused. The middleware is the outermost layer
(ahead of routing and of the other middleware), so a refusal costs a dict lookup and one pre-built response; it
is therefore not in the HTTP request families, only in the refused counter.
"""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from icy_backend.metrics.families import Metrics

EXEMPT_PATHS: Final = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
EXEMPT_PREFIXES: Final = ("/api/v1/health/",)

_BODY: Final = json.dumps({"data": None, "error": "overloaded"}, separators=(",", ":")).encode()
_HEADERS: Final = (
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", b"1"),
    (b"cache-control", b"no-store"),
)


def is_exempt(path: str) -> bool:
    """Probes and scrapes: never counted, never refused."""
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


class AdmissionControlMiddleware:
    """Pure ASGI: at most ``limit`` business requests in flight; the next one is refused, never queued."""

    def __init__(self, app: ASGIApp, *, limit: int, metrics: Metrics) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.app = app
        self.limit = limit
        self.in_flight = 0  # changed only on the event loop's thread
        self._refused = metrics.requests_refused.labels("overloaded")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self._refused.inc()
            await send({"type": "http.response.start", "status": 503, "headers": list(_HEADERS)})
            await send({"type": "http.response.body", "body": _BODY})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
