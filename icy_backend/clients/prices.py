"""BTC/USD price from a CoinGecko-compatible ``simple/price`` endpoint, cached 60 s with single-flight."""

from __future__ import annotations

import json
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio
import httpx

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import InvalidResponse
from icy_backend.clients.http import Request, Upstream
from icy_backend.metrics.business import cache_hit, cache_miss
from icy_backend.metrics.families import Metrics

SERVICE = "coingecko"
CACHE_SECONDS = 60.0
_PRICE = Request("GET", "/simple/price", params={"ids": "bitcoin", "vs_currencies": "usd"})


def _decimal_json(op: str, response: httpx.Response) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponse(SERVICE, f"{op}: body is not JSON") from None


def parse_btc_usd(data: Any) -> Decimal:
    """``{"bitcoin": {"usd": <number>}}`` → a positive Decimal (from the number's text, never a float)."""
    value = data["bitcoin"]["usd"]
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise InvalidResponse(SERVICE, "price is not a number")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise InvalidResponse(SERVICE, "price is not a number") from None
    if not price.is_finite() or price <= 0:
        raise InvalidResponse(SERVICE, "price is not positive")
    return price


class PriceClient:
    """``btc_usd()`` with a 60 s cache; concurrent callers on a miss share one request."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        breakers: Breakers,
        metrics: Metrics,
        *,
        deadline: float = 10.0,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.upstream = Upstream(SERVICE, http, [base_url], breakers, metrics, deadline=deadline)
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, Decimal] | None = None
        self._lock = anyio.Lock()

    def _fresh(self) -> Decimal | None:
        if self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        return None

    async def btc_usd(self) -> Decimal:
        """Counted in ``icy_backend_cache_operations_total{cache_type="btc_price"}``: a hit, or a miss per fetch."""
        price = self._fresh()
        if price is not None:
            cache_hit(self.upstream.metrics, "btc_price")
            return price
        # Single flight: the first caller fetches; the others wait on the lock and then read the cache.
        async with self._lock:
            price = self._fresh()
            if price is not None:
                cache_hit(self.upstream.metrics, "btc_price")
                return price
            cache_miss(self.upstream.metrics, "btc_price")
            price = await self.upstream.call("btc_usd", _PRICE, lambda r: parse_btc_usd(_decimal_json("btc_usd", r)))
            self._cached = (time.monotonic(), price)
            return price

    async def probe(self) -> Decimal:
        """One direct price request: no breaker, retry, cache or metrics."""
        return await self.upstream.probe_request(_PRICE, lambda r: parse_btc_usd(_decimal_json("probe", r)))
