"""CoinGecko-compatible price simulator: ``GET /simple/price?ids=bitcoin&vs_currencies=usd``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from icy_backend.sim.faults import FaultInjector, FaultSet


class PriceSim:
    """Prices per coin id and currency (``prices["bitcoin"]["usd"]``); settable with ``set_price``."""

    def __init__(self, btc_usd: float = 65000.12) -> None:
        self.prices: dict[str, dict[str, float]] = {"bitcoin": {"usd": btc_usd}}
        self.faults = FaultSet()
        self.app = FaultInjector(
            Starlette(
                routes=[
                    Route("/simple/price", self._h_price),
                    Route("/_sim/price", self._h_set, methods=["PUT"]),
                ]
            ),
            self.faults,
        )

    def set_price(self, usd: float, coin: str = "bitcoin", currency: str = "usd") -> None:
        self.prices.setdefault(coin, {})[currency] = usd

    async def _h_price(self, request: Request) -> Response:
        ids = [i.strip() for i in request.query_params.get("ids", "").split(",") if i.strip()]
        currencies = [c.strip().lower() for c in request.query_params.get("vs_currencies", "").split(",") if c.strip()]
        if not ids or not currencies:
            return JSONResponse({"error": "Missing parameter ids or vs_currencies"}, status_code=400)
        body: dict[str, dict[str, float]] = {}
        for coin in ids:
            known = self.prices.get(coin)
            if known is None:
                continue
            body[coin] = {c: known[c] for c in currencies if c in known}
        return JSONResponse(body)

    async def _h_set(self, request: Request) -> Response:
        data = await request.json()
        self.set_price(float(data["usd"]), str(data.get("coin", "bitcoin")))
        return JSONResponse(self.prices)
