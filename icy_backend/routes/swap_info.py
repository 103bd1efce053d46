"""``GET /api/v1/swap/info``: balances, rates and the minimum swap; partial data with warnings (SPEC §9)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icy_backend.domain.swap_info import swap_info
from icy_backend.http.responses import ApiError, envelope
from icy_backend.metrics.business import business_operation


async def get_swap_info(request: Request) -> Response:
    state = request.state
    async with business_operation(state.metrics, "swap_info", "swap") as op:
        info = await swap_info(state.oracle, state.clients.prices, state.settings)
        if info.all_failed:
            op.failed()
            raise ApiError(503, "upstream_unavailable", "failed to retrieve any data")
    return envelope(info.data, message="info retrieved successfully")


routes: list[BaseRoute] = [Route("/api/v1/swap/info", get_swap_info, methods=["GET"])]

__all__ = ["get_swap_info", "routes"]
