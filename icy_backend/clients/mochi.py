"""Mochi Pay: circulating ICY in wei (SPEC §7)."""

from __future__ import annotations

from typing import Any

import httpx

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import InvalidResponse
from icy_backend.clients.http import Request, Upstream, response_json
from icy_backend.metrics.families import Metrics

SERVICE = "mochi_pay"
_CIRCULATED = Request("GET", "/api/v1/console-tokens/icy/circulated")


def parse_circulated(data: Any) -> int:
    """``{"data": {"icy": {"value": "<wei>", "decimal": 18, ...}}}`` → wei as an int (18 decimals)."""
    icy = data["data"]["icy"]
    value, decimals = icy["value"], icy.get("decimal", 18)
    if decimals != 18:
        raise InvalidResponse(SERVICE, "unexpected decimals")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidResponse(SERVICE, "value is not a decimal integer string")
    text = str(value).strip()
    if not text.isdigit():
        raise InvalidResponse(SERVICE, "value is not a decimal integer string")
    return int(text)


class MochiPayClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        breakers: Breakers,
        metrics: Metrics,
        *,
        deadline: float = 10.0,
    ) -> None:
        self.upstream = Upstream(SERVICE, http, [base_url], breakers, metrics, deadline=deadline)

    async def circulated_icy(self) -> int:
        """Circulating ICY in wei."""
        op = "circulated_icy"
        return await self.upstream.call(op, _CIRCULATED, lambda r: parse_circulated(response_json(SERVICE, op, r)))

    async def probe(self) -> int:
        """One direct request: no breaker, retry or metrics."""
        return await self.upstream.probe_request(
            _CIRCULATED, lambda r: parse_circulated(response_json(SERVICE, "probe", r))
        )
