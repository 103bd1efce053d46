"""``GET /api/v1/transactions``: the payout listing. No envelope on success (kept from the old contract)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icy_backend.db.tables import PAYOUT_STATUSES
from icy_backend.domain.transactions import TransactionFilter, list_transactions
from icy_backend.http.responses import ApiError, JSONBody

MAX_LIMIT = 100
MAX_OFFSET = 1_000_000_000
_EVM = re.compile(r"0x[0-9a-fA-F]{40}")
_BTC = re.compile(r"[A-Za-z0-9]{14,100}")


def _int_param(request: Request, name: str, default: int, low: int, high: int, errors: list[dict[str, str]]) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,12}", text):
        errors.append({"field": name, "msg": f"must be an integer between {low} and {high}"})
        return default
    value = int(text)
    if not low <= value <= high:
        errors.append({"field": name, "msg": f"must be between {low} and {high}"})
        return default
    return value


def parse_filter(request: Request) -> TransactionFilter:
    """Validate the query; every bad parameter is reported (400 with ``errors``, field = query key)."""
    errors: list[dict[str, str]] = []
    limit = _int_param(request, "limit", 10, 1, MAX_LIMIT, errors)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET, errors)
    params = request.query_params
    btc = (params.get("btc_address") or "").strip() or None
    if btc is not None and not _BTC.fullmatch(btc):
        errors.append({"field": "btc_address", "msg": "must be a Bitcoin address"})
    evm = (params.get("evm_address") or "").strip() or None
    if evm is not None and not _EVM.fullmatch(evm):
        errors.append({"field": "evm_address", "msg": "must be a 0x-prefixed 20-byte hex address"})
    status = (params.get("status") or "").strip() or None
    if status is not None and status not in PAYOUT_STATUSES:
        errors.append({"field": "status", "msg": "must be one of " + ", ".join(PAYOUT_STATUSES)})
    if errors:
        raise ApiError(400, "invalid_request", "Invalid query parameters", errors=errors)
    return TransactionFilter(limit=limit, offset=offset, btc_address=btc, evm_address=evm, status=status)


async def get_transactions(request: Request) -> Response:
    filt = parse_filter(request)
    total, rows = await list_transactions(request.state.engine, filt)
    return JSONBody({"total": total, "transactions": rows})


routes: list[BaseRoute] = [Route("/api/v1/transactions", get_transactions, methods=["GET"])]

__all__ = ["get_transactions", "parse_filter", "routes"]
