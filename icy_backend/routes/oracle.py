"""``/api/v1/oracle/*``: circulating ICY, treasury BTC and the ICY/BTC ratio (enveloped, SPEC §4).

``circulated-icy``, ``treasury-btc`` and ``icy-btc-ratio`` answer fresh values (and refresh the cache);
``icy-btc-ratio-cached`` answers from the 5-minute cache.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icy_backend.clients.errors import UpstreamError, error_class
from icy_backend.domain.oracle import OracleService
from icy_backend.http.responses import ApiError, envelope

log = logging.getLogger(__name__)


def unavailable(exc: Exception, message: str) -> ApiError:
    """A 503 envelope naming only the error class (``circuit_open``, ``timeout``, ...), never the text."""
    cls = "database_unavailable" if isinstance(exc, SQLAlchemyError) else error_class(exc)
    log.warning("%s: %s (%s: %s)", message, cls, type(exc).__name__, exc)
    headers = None
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        headers = {"Retry-After": str(max(1, int(retry_after)))}
    return ApiError(503, cls, message, headers=headers)


async def _value(call: Callable[[], Awaitable[int]], decimal: int, message: str) -> Response:
    try:
        value = await call()
    except (UpstreamError, SQLAlchemyError, OSError, TimeoutError) as exc:
        raise unavailable(exc, message) from None
    return envelope({"value": str(value), "decimal": decimal})


def _oracle(request: Request) -> OracleService:
    oracle: OracleService = request.state.oracle
    return oracle


async def circulated_icy(request: Request) -> Response:
    oracle = _oracle(request)

    async def call() -> int:
        return (await oracle.circulated_icy(fresh=True)).value

    return await _value(call, 18, "can't get circulated ICY")


async def treasury_btc(request: Request) -> Response:
    oracle = _oracle(request)
    return await _value(lambda: oracle.treasury_btc(fresh=True), 8, "can't get treasury BTC")


async def icy_btc_ratio(request: Request) -> Response:
    oracle = _oracle(request)
    return await _value(lambda: oracle.icy_btc_ratio(fresh=True), 8, "can't get realtime ICY/BTC price")


async def icy_btc_ratio_cached(request: Request) -> Response:
    oracle = _oracle(request)
    return await _value(lambda: oracle.icy_btc_ratio(), 8, "can't get cached ICY/BTC price")


routes: list[BaseRoute] = [
    Route("/api/v1/oracle/circulated-icy", circulated_icy, methods=["GET"]),
    Route("/api/v1/oracle/treasury-btc", treasury_btc, methods=["GET"]),
    Route("/api/v1/oracle/icy-btc-ratio", icy_btc_ratio, methods=["GET"]),
    Route("/api/v1/oracle/icy-btc-ratio-cached", icy_btc_ratio_cached, methods=["GET"]),
]

__all__ = ["routes", "unavailable"]
