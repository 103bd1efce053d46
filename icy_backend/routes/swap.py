"""``POST /api/v1/swap/generate-signature`` and ``POST /api/v1/swap`` (SPEC §4, §9).

Every refusal is a 400 envelope with a clear ``message``, a short ``error`` class and one field error. The
signature is only produced after every check passed, including the price check against the pricing ratio —
complete figures, treasury net of owed payouts, 503 ``oracle_incomplete`` otherwise (fix: the old endpoint signed
any pair) and a chain id confirmed by the node (503 while it differs). No on-chain
``approve`` is sent (fix: the old endpoint sent one per request from the signer wallet).
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, StrictStr
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icy_backend.clients.errors import UpstreamError, error_class
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.db.engine import insert_ignore
from icy_backend.db.tables import swap_requests
from icy_backend.domain.oracle import OracleIncomplete
from icy_backend.domain.signature import SwapSigner
from icy_backend.domain.swap_validation import (
    PricingUnavailable,
    SwapRejected,
    check_price,
    parse_swap_request,
    price_swap_request,
    validate_signature_request,
)
from icy_backend.http.body import read_json
from icy_backend.http.responses import ApiError, envelope
from icy_backend.metrics.business import SwapOperation, business_operation, swap_operation
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

CHAIN_ID_TTL = 60.0
_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


class SignatureBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    icy_amount: StrictStr
    btc_address: StrictStr
    btc_amount: StrictStr


class SwapRequestBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    icy_amount: StrictStr
    btc_address: StrictStr
    icy_tx: StrictStr


class ChainIdGuard:
    """The node's chain id, confirmed against ``BLOCKCHAIN_CHAIN_ID`` and cached for a minute when it matches
    (a mismatch is never cached: signing resumes as soon as the node is right again)."""

    def __init__(self, expected: int, ttl: float = CHAIN_ID_TTL) -> None:
        self.expected = expected
        self.ttl = ttl
        self._confirmed_at: float | None = None
        self._lock = anyio.Lock()

    async def confirm(self, evm: EvmRpcClient) -> None:
        """Raise ApiError 503 unless the node serves the configured chain."""
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():
                return
            try:
                served = await evm.chain_id()
            except UpstreamError as exc:
                raise ApiError(503, error_class(exc), "Cannot confirm the chain id with the node") from None
            if served != self.expected:
                log.warning("chain id mismatch: node serves another chain than BLOCKCHAIN_CHAIN_ID")
                raise ApiError(503, "chain_id_mismatch", "The node serves another chain; signing is paused")
            self._confirmed_at = time.monotonic()

    def _fresh(self) -> bool:
        return self._confirmed_at is not None and time.monotonic() - self._confirmed_at < self.ttl


_GUARDS: weakref.WeakKeyDictionary[EvmRpcClient, ChainIdGuard] = weakref.WeakKeyDictionary()


def chain_guard(evm: EvmRpcClient, expected: int) -> ChainIdGuard:
    guard = _GUARDS.get(evm)
    if guard is None or guard.expected != expected:
        guard = _GUARDS[evm] = ChainIdGuard(expected)
    return guard


def _rejected(metrics: Metrics, operation: SwapOperation, exc: SwapRejected) -> ApiError:
    swap_operation(metrics, operation, "rejected")
    return ApiError(400, exc.error, exc.message, errors=[{"field": exc.field, "msg": exc.message}])


async def _ratio(request: Request, metrics: Metrics, operation: SwapOperation) -> int:
    """The pricing ratio (complete figures, treasury net of owed payouts; SPEC §9), or a 503 naming the class:
    ``oracle_incomplete`` when Mochi Pay's figure is unknown for longer than ``MOCHI_MAX_AGE``."""
    try:
        ratio: int = await request.state.oracle.pricing_ratio()
    except OracleIncomplete:
        swap_operation(metrics, operation, "error")
        raise ApiError(
            503, "oracle_incomplete", "Cannot price the swap right now: the circulating ICY figure is incomplete"
        ) from None
    except (UpstreamError, SQLAlchemyError, OSError, TimeoutError) as exc:
        swap_operation(metrics, operation, "error")
        cls = "database_unavailable" if isinstance(exc, SQLAlchemyError) else error_class(exc)
        raise ApiError(503, cls, "Cannot price the swap right now") from None
    return ratio


def _paused(metrics: Metrics, operation: SwapOperation) -> ApiError:
    swap_operation(metrics, operation, "error")
    return ApiError(503, "pricing_unavailable", "Swaps are paused: the treasury cannot be priced")


async def generate_signature(request: Request) -> Response:
    settings: Settings = request.state.settings
    metrics: Metrics = request.state.metrics
    async with business_operation(metrics, "generate_signature", "swap") as op:
        try:
            body = await read_json(request, SignatureBody)
        except ApiError:
            op.failed()
            swap_operation(metrics, "signature", "rejected")
            raise
        try:
            swap = validate_signature_request(
                body.icy_amount,
                body.btc_address,
                body.btc_amount,
                network=settings.btc_network,
                fee_rate=settings.BTC_SERVICE_FEE_PERCENTAGE,
                min_fee=settings.BTC_MIN_SATOSHI_FEE,
            )
        except SwapRejected as exc:
            op.failed()
            raise _rejected(metrics, "signature", exc) from None
        key = settings.BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY
        contract = settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR
        if key is None or not key.get_secret_value() or not contract:
            op.failed()
            swap_operation(metrics, "signature", "error")
            raise ApiError(503, "not_configured", "Swap signing is not configured")
        ratio = await _ratio(request, metrics, "signature")
        try:
            check_price(swap, ratio)
        except SwapRejected as exc:
            op.failed()
            raise _rejected(metrics, "signature", exc) from None
        except PricingUnavailable:
            op.failed()
            raise _paused(metrics, "signature") from None
        try:
            await chain_guard(request.state.clients.evm, settings.chain_id).confirm(request.state.clients.evm)
        except ApiError:
            op.failed()
            swap_operation(metrics, "signature", "error")
            raise
        signer = SwapSigner(key.get_secret_value(), settings.chain_id, contract)
        auth = signer.sign(swap.icy_amount, swap.btc_address, swap.btc_amount)
        swap_operation(metrics, "signature", "success")
        data: dict[str, Any] = {
            "signature": auth.signature,
            "nonce": str(auth.nonce),
            "deadline": str(auth.deadline),
            "icy_amount": str(auth.icy_amount),
            "btc_amount": str(auth.btc_amount),
        }
        return envelope(data, message="signature generated successfully")


async def create_swap_request(request: Request) -> Response:
    settings: Settings = request.state.settings
    metrics: Metrics = request.state.metrics
    engine: AsyncEngine = request.state.engine
    async with business_operation(metrics, "swap_request", "swap") as op:
        try:
            body = await read_json(request, SwapRequestBody)
        except ApiError:
            op.failed()
            swap_operation(metrics, "swap_request", "rejected")
            raise
        try:
            icy, address = parse_swap_request(
                body.icy_amount,
                body.btc_address,
                network=settings.btc_network,
                min_icy=settings.MIN_ICY_SWAP_AMOUNT,
            )
            if not _TX_HASH.fullmatch(body.icy_tx):
                raise SwapRejected("icy_tx", "invalid_tx_hash", "icy_tx must be a 0x-prefixed 32-byte hex hash")
        except SwapRejected as exc:
            op.failed()
            raise _rejected(metrics, "swap_request", exc) from None
        ratio = await _ratio(request, metrics, "swap_request")
        try:
            price_swap_request(
                icy,
                address,
                ratio=ratio,
                fee_rate=settings.BTC_SERVICE_FEE_PERCENTAGE,
                min_fee=settings.BTC_MIN_SATOSHI_FEE,
            )
        except SwapRejected as exc:
            op.failed()
            raise _rejected(metrics, "swap_request", exc) from None
        except PricingUnavailable:
            op.failed()
            raise _paused(metrics, "swap_request") from None
        try:
            async with engine.begin() as conn:
                result = await conn.execute(
                    insert_ignore(engine, swap_requests).values(
                        icy_amount=icy,
                        btc_address=address.text,
                        icy_tx=body.icy_tx.lower(),
                        status="pending",
                    )
                )
        except SQLAlchemyError:
            op.failed()
            swap_operation(metrics, "swap_request", "error")
            log.warning("swap request insert failed", exc_info=True)
            raise ApiError(503, "database_unavailable", "Cannot store the swap request right now") from None
        if result.rowcount == 0:
            op.failed()
            swap_operation(metrics, "swap_request", "rejected")
            raise ApiError(
                409,
                "duplicate_icy_tx",
                "This ICY transaction has already been used for a swap request",
                errors=[{"field": "icy_tx", "msg": "already used"}],
            )
        swap_operation(metrics, "swap_request", "success")
        return envelope("success", message="swap request created successfully")


routes: list[BaseRoute] = [
    Route("/api/v1/swap/generate-signature", generate_signature, methods=["POST"]),
    Route("/api/v1/swap", create_swap_request, methods=["POST"]),
]
