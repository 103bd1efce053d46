"""Control routes of the Esplora simulator (SPEC §11): fees, evict, mine, reorg, spend, payments, lag.

Every control takes a JSON object, answers 200 with the node's new state, and refuses an unknown key or a value
of the wrong type with 400 (so no test can silently rely on a control that does not exist).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from icy_backend.sim.esplora_chain import ControlError

if TYPE_CHECKING:
    from icy_backend.sim.esplora import EsploraView

# Kinds a field may have: "int" (not bool), "number" (int or float), "bool", "str", "rates" (object of numbers).
Schema = dict[str, str]


class BadControl(ValueError):
    """A control body that does not match its schema."""


def _check(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and value == value
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "rates":
        return isinstance(value, dict) and all(k.isdigit() and _check("number", v) and v >= 0 for k, v in value.items())
    raise AssertionError(kind)


async def parse_body(request: Request, schema: Schema, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object checked against ``schema``; an empty body is ``{}``."""
    raw = await request.body()
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BadControl("body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadControl("body must be a JSON object")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise BadControl(f"unknown keys: {unknown}")
    missing = [k for k in required if k not in data]
    if missing:
        raise BadControl(f"missing keys: {missing}")
    for key, value in data.items():
        if not _check(schema[key], value):
            raise BadControl(f"{key} must be of kind {schema[key]}")
    return data


def _bad(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=400)


def control_routes(view: EsploraView, *, lagging: bool) -> list[Route]:
    """The ``/_sim/...`` routes acting on ``view``'s chain (and, for a lagging view, on its lag)."""
    chain = view.chain

    def answer(**extra: Any) -> Response:
        return JSONResponse({**chain.state(), "view_height": view.tip, "lag": view.lag, **extra})

    async def fees(request: Request) -> Response:
        data = await parse_body(request, {"estimates": "rates", "mempool_min": "number"})
        if "mempool_min" in data and data["mempool_min"] < 0:
            raise BadControl("mempool_min must be >= 0")
        evicted = chain.set_fees(data.get("estimates"), data.get("mempool_min"))
        return answer(evicted=evicted)

    async def evict(request: Request) -> Response:
        data = await parse_body(request, {"txid": "str"}, required=("txid",))
        return answer(evicted=chain.evict(data["txid"]))

    async def mine(request: Request) -> Response:
        data = await parse_body(request, {"blocks": "int", "min_fee_rate": "number"})
        blocks, rate = data.get("blocks", 1), data.get("min_fee_rate", 0)
        if not 1 <= blocks <= 1000 or rate < 0:
            raise BadControl("blocks must be 1..1000 and min_fee_rate >= 0")
        before = len(chain.blocks)
        chain.mine(blocks, float(rate))
        new = chain.blocks[before:]
        return answer(hashes=[b.hash for b in new], mined=[t for b in new for t in b.txids])

    async def reorg(request: Request) -> Response:
        data = await parse_body(request, {"depth": "int", "drop": "bool"}, required=("depth",))
        return answer(**chain.reorg(data["depth"], drop=data.get("drop", False)))

    async def spend(request: Request) -> Response:
        data = await parse_body(request, {"outpoint": "str", "confirm": "bool"}, required=("outpoint",))
        txid, _, vout = data["outpoint"].partition(":")
        if not vout.isdigit():
            raise BadControl("outpoint must be <txid>:<vout>")
        foreign, conflicted = chain.spend(txid, int(vout), confirm=data.get("confirm", True))
        return answer(txid=foreign, conflicted=conflicted)

    async def fund(request: Request) -> Response:
        schema = {"address": "str", "value": "int", "confirmed": "bool", "wallet": "bool"}
        data = await parse_body(request, schema, required=("address", "value"))
        if data["value"] <= 0:
            raise BadControl("value must be positive")
        txid, vout = chain.fund(
            data["address"], data["value"], data.get("confirmed", True), wallet=data.get("wallet", True)
        )
        return answer(txid=txid, vout=vout)

    async def payments(request: Request) -> Response:
        return JSONResponse(chain.payments())

    async def state(request: Request) -> Response:
        return answer()

    async def lag(request: Request) -> Response:
        data = await parse_body(request, {"blocks": "int"}, required=("blocks",))
        if data["blocks"] < 0:
            raise BadControl("blocks must be >= 0")
        view.lag = data["blocks"]
        return answer()

    def guarded(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except (BadControl, ControlError) as exc:
                return _bad(str(exc))
            return response

        return run

    routes = [
        Route("/_sim/fees", guarded(fees), methods=["PUT"]),
        Route("/_sim/evict", guarded(evict), methods=["POST"]),
        Route("/_sim/mine", guarded(mine), methods=["POST"]),
        Route("/_sim/reorg", guarded(reorg), methods=["POST"]),
        Route("/_sim/spend", guarded(spend), methods=["POST"]),
        Route("/_sim/fund", guarded(fund), methods=["POST"]),
        Route("/_sim/payments", guarded(payments), methods=["GET"]),
        Route("/_sim/state", guarded(state), methods=["GET"]),
    ]
    if lagging:
        routes.append(Route("/_sim/lag", guarded(lag), methods=["PUT"]))
    return routes
