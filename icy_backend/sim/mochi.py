"""Mochi Pay simulator: ``GET /api/v1/console-tokens/icy/circulated``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from icy_backend.sim.faults import FaultInjector, FaultSet


class MochiSim:
    """ICY circulating on Mochi Pay, in wei (``value``, settable with ``set_value``)."""

    def __init__(self, value_wei: int = 1_000 * 10**18, chain_id: str = "8453") -> None:
        self.value_wei = value_wei
        self.chain_id = chain_id
        self.faults = FaultSet()
        self.app = FaultInjector(
            Starlette(
                routes=[
                    Route("/api/v1/console-tokens/icy/circulated", self._h_circulated),
                    Route("/_sim/value", self._h_set, methods=["PUT"]),
                ]
            ),
            self.faults,
        )

    def set_value(self, value_wei: int) -> None:
        self.value_wei = value_wei

    async def _h_circulated(self, request: Request) -> Response:
        icy = {"value": str(self.value_wei), "decimal": 18, "chain_id": self.chain_id}
        return JSONResponse({"data": {"icy": icy}})

    async def _h_set(self, request: Request) -> Response:
        self.set_value(int((await request.json())["value"]))
        return JSONResponse({"value": str(self.value_wei)})
