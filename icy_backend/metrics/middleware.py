"""Pure-ASGI HTTP metrics middleware (SPEC §6).

Records ``icy_backend_http_request_duration_seconds``, ``icy_backend_http_requests_total`` and
``icy_backend_http_response_size_bytes`` by ``method``, ``path`` and ``status``, and
``icy_backend_http_requests_in_flight`` by ``method``.

Cardinality is bounded by construction:

* ``path`` is the matched route template (``/api/v1/transactions``, ``/items/{item_id}``) read from
  ``scope["route"]`` *after* the inner app ran (Starlette's router stores the matched route there, also on a
  405 partial match). Mount prefixes are composed from a route → template map built once per router. A request
  no route matched is ``path="<unmatched>"``.
* ``method`` is one of GET HEAD POST PUT PATCH DELETE OPTIONS, anything else is ``OTHER``.
* ``status`` is the status code the app sent (500 when the app raised an ``Exception`` or sent no response). A
  request ended by a ``BaseException`` that is not an ``Exception`` (a cancellation at shutdown) is not counted.

Middleware placed *inside* this one must pass the same ``scope`` dict down (all Starlette middleware does);
otherwise the route is invisible here and every request counts as ``<unmatched>``.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Final

from starlette.routing import BaseRoute, Host, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icy_backend.metrics.families import HTTP_METHOD_LABELS, Metrics
from icy_backend.metrics.http_collector import HttpSeries

UNMATCHED: Final = "<unmatched>"
OTHER_METHOD: Final = "OTHER"
KNOWN_METHODS: Final = HTTP_METHOD_LABELS[:-1]
DEFAULT_MAX_CACHED: Final = 10_000

_METHOD_LABEL: Final[dict[str, str]] = {m: m for m in KNOWN_METHODS}


def _collect_templates(routes: list[BaseRoute], prefix: str, out: dict[int, tuple[BaseRoute, str]]) -> None:
    """Map ``id(route)`` to its full template (mount prefixes included), recursing into mounts and hosts."""
    for route in routes:
        if isinstance(route, Mount):
            base = prefix + route.path
            inner = route.routes
            # A mount left as the recorded route means: its inner router matched nothing (unmatched), or its
            # app is not a router (static files, a sub-app) and the mount itself is the template.
            out[id(route)] = (route, UNMATCHED if inner else base + "/{path}")
            _collect_templates(inner, base, out)
        elif isinstance(route, Host):
            _collect_templates(route.routes, prefix, out)
        else:
            path = getattr(route, "path", None)
            if isinstance(path, str):
                out[id(route)] = (route, prefix + path)


class HttpMetricsMiddleware:
    """Pure-ASGI middleware recording the HTTP families of SPEC §6; non-http scopes pass straight through."""

    def __init__(self, app: ASGIApp, metrics: Metrics, *, max_cached: int = DEFAULT_MAX_CACHED) -> None:
        self.app = app
        self._max_cached = max_cached
        # Series resolved once per (method, template, status): a dict hit on the int status, no str(status) and
        # no label tuple per request. Bounded; past the bound series are resolved through the collector.
        self._children: dict[tuple[str, str, int], HttpSeries] = {}
        self._collector = metrics.http_collector
        self._in_flight = metrics.http_in_flight_counts  # read by the gauge at scrape time
        # Route templates of the router last seen (the app's top router; one per app in practice).
        self._router: object = None
        self._templates: dict[int, tuple[BaseRoute, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = _METHOD_LABEL.get(scope["method"], OTHER_METHOD)
        in_flight = self._in_flight
        status = 500
        size = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight[method] += 1
        start = perf_counter()
        outcome = True
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            status = 500
            raise
        except BaseException:
            # A cancellation (shutdown, a server timeout): the request has no outcome, so it is not counted at
            # all rather than as a 500 the app never sent.
            outcome = False
            raise
        finally:
            in_flight[method] -= 1
            if outcome:
                self._resolve(method, self._template(scope), status).observe(perf_counter() - start, size)

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        entry = self._templates.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        return self._template_slow(scope, route)

    def _template_slow(self, scope: Scope, route: Any) -> str:
        """First sight of a route (or of a router): (re)build the template map; runs once per route."""
        router = scope.get("router")
        if router is not self._router:
            self._router = router
            self._templates = {}
        routes = getattr(router, "routes", None)
        if isinstance(routes, list):
            _collect_templates(routes, "", self._templates)
        entry = self._templates.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        # Not reachable from the top router (added outside it): its own template, without mount prefixes.
        path = getattr(route, "path", None)
        template = path if isinstance(path, str) and isinstance(route, BaseRoute) else UNMATCHED
        if isinstance(route, BaseRoute) and len(self._templates) < self._max_cached:
            self._templates[id(route)] = (route, template)
        return template

    def _resolve(self, method: str, template: str, status: int) -> HttpSeries:
        key = (method, template, status)
        series = self._children.get(key)
        if series is None:
            series = self._collector.series(method, template, str(status))
            if len(self._children) < self._max_cached:
                self._children[key] = series
        return series
