"""Swap requests (SPEC §9): swap ICY the user sent to the signer wallet, by calling ``swap(...)`` on their behalf.

State machine of ``swap_requests.status``::

    pending ──ICY transfer indexed; convert, sign, store signed tx + hash──▶ sending ──a receipt ok──▶ completed
       ▲  └─never payable (bad address, below dust)──▶ failed                 │ ──a receipt reverted──▶ failed
       │                                                                      │ ──deadline < 2 min, unmined──▶
       │                                                                      │   sending (same nonce, fresh
       │                                                                      │   signature, fees ≥ +10 %)
       └──── one endpoint: nonce used ≥ BLOCKCHAIN_CONFIRMATIONS deep, none of our txs known ◀──┘

The signed transaction and its hash are committed (``sending``) **before** the send: a retry (timeout, crash,
next run) re-sends the very same bytes. Every transaction of a request shares one account nonce
(``evm_nonce``), so at most one of them is ever mined; replacements keep the superseded hashes
(``replaced_tx_hashes``) and a receipt of any of them decides the request. A ``sending`` request is decided only
on what **one endpoint** answered in **one batch** (`swap_request_view`). The ``Swap`` event of a completed
request becomes a payout through the swap indexer like any other.

Nonces are allocated under the sender lock (a PostgreSQL advisory lock held while the request is claimed and its
transaction stored; an in-process lock on SQLite): the next nonce is the node's pending count or one past the
highest nonce of a request still ``sending``, whichever is higher, so two processors never build on one nonce.

Conversion (fix: the old one was 100x too large): ``sats = icy_wei // (ratio * 100)`` with the pricing ratio
(ICY per BTC x 10^8). No service fee is taken here; the payout of the ``Swap`` event takes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.clients.errors import JsonRpcError, UpstreamError, error_class
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.db.engine import is_postgres
from icy_backend.db.tables import onchain_icy_transactions, swap_requests
from icy_backend.db.types import utcnow
from icy_backend.domain.oracle import OracleService
from icy_backend.domain.row_machine import (
    SKIPPED,
    ItemHook,
    RowLog,
    count_rows,
    fail_row,
    move_row,
    process_lock,
    run_queue,
)
from icy_backend.domain.signature import SwapSigner
from icy_backend.domain.swap_request_view import ChainView, read_view
from icy_backend.domain.swap_tx import (
    GAS_HEADROOM_DEN,
    GAS_HEADROOM_NUM,
    Fees,
    SwapTx,
    authorisation_calldata,
    decode_stored,
    market_fees,
    next_nonce,
    sign_swap_tx,
    swap_calldata,
)
from icy_backend.domain.swap_validation import PricingUnavailable, SwapRejected, check_address, check_payable
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

R = swap_requests
SENDER_LOCK_KEY = 0x6963792D737770  # "icy-swp": serialises nonce allocation of the signer wallet
REPLACE_BEFORE_DEADLINE = 120  # seconds left to the signature deadline below which an unmined tx is replaced
# Replacements per request (one every ~8 minutes while unmined): bounds the fee growth (x1.1 each) and the batch
# (two reads per transaction). Past it the request waits for a person (IcyBackendSwapRequestsStuck).
MAX_REPLACEMENTS = 20
_rows = RowLog(log, "swap request")


@dataclass
class SwapRequestReport:
    sent: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    waiting: list[int] = field(default_factory=list)  # ICY transfer not indexed yet
    returned_to_pending: list[int] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)


class SwapRequestProcessor:
    """Processes ``swap_requests``; one instance per app (the signer key stays inside)."""

    def __init__(
        self,
        engine: AsyncEngine,
        evm: EvmRpcClient,
        oracle: OracleService,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = settings.BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY
        contract = settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR
        if key is None or not key.get_secret_value() or not contract:
            raise ValueError("BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY and BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR are required")
        self.engine = engine
        self.evm = evm
        self.oracle = oracle
        self.settings = settings
        self.clock = clock  # unix seconds: signature deadlines
        self._key = key.get_secret_value()
        self.signer = SwapSigner(self._key, settings.chain_id, contract)
        self.contract = to_checksum_address(contract)

    def __repr__(self) -> str:
        return f"SwapRequestProcessor(signer={self.signer.address})"

    async def run(self, on_item: ItemHook | None = None) -> SwapRequestReport:
        """Reconcile every ``sending`` request, then try every ``pending`` one once."""
        report = SwapRequestReport()

        await run_queue(
            _rows,
            self.engine,
            R,
            "sending",
            lambda row_id: self.reconcile(row_id, report),
            lambda row_id: self.process(row_id, report),
            on_item,
        )
        return report

    # ------------------------------------------------------------------ pending → sending

    async def process(self, row_id: int, report: SwapRequestReport) -> str | None:
        stored = await self._claim_and_store(row_id, report)
        if isinstance(stored, str):
            return stored
        return await self._send(row_id, stored.raw, stored.hash, report)

    async def _claim_and_store(self, row_id: int, report: SwapRequestReport) -> SwapTx | str:
        async with self._sender_lock(), self.engine.begin() as conn:
            if is_postgres(self.engine):
                # The sender lock: nonce allocation and the store happen for one request at a time, across
                # processes and replicas (released at commit, once the transaction and its nonce are stored).
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SENDER_LOCK_KEY})
            query = select(R).where(R.c.id == row_id, R.c.status == "pending")
            if is_postgres(self.engine):
                query = query.with_for_update(skip_locked=True)
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return SKIPPED
            icy = int(row["icy_amount"])
            if not await self._icy_received(conn, str(row["icy_tx"]), icy):
                report.waiting.append(row_id)
                return SKIPPED  # not indexed yet: waiting is not a failure
            try:
                address = check_address("btc_address", str(row["btc_address"]), self.settings.btc_network)
                ratio = await self.oracle.pricing_ratio()
                if ratio <= 0:
                    raise PricingUnavailable("ratio is 0")
                sats = icy // (ratio * 100)
                check_payable(
                    address, sats, self.settings.BTC_SERVICE_FEE_PERCENTAGE, self.settings.BTC_MIN_SATOSHI_FEE
                )
            except SwapRejected as exc:
                reason = "invalid_address" if exc.error == "invalid_address" else "below_dust"
                await self._fail(conn, row_id, "pending", reason, report)
                return reason
            except PricingUnavailable:
                return await self._defer(conn, row_id, "pricing_unavailable", report)
            except UpstreamError as exc:
                return await self._defer(conn, row_id, error_class(exc), report)
            try:
                tx = await self._build(conn, icy, address.text, sats)
            except JsonRpcError as exc:
                reason = "estimate_reverted" if exc.is_revert else "rpc_error"
                return await self._defer(conn, row_id, reason, report)
            except UpstreamError as exc:
                return await self._defer(conn, row_id, error_class(exc), report)
            result = await conn.execute(
                update(R)
                .where(R.c.id == row_id, R.c.status == "pending")
                .values(
                    status="sending",
                    btc_amount=sats,
                    signed_tx=tx.raw,
                    evm_tx_hash=tx.hash,
                    evm_nonce=tx.nonce,
                    signature_deadline=tx.deadline,
                    replaced_tx_hashes=None,
                    failure_reason=None,
                    updated_at=utcnow(),
                )
            )
            if result.rowcount != 1:
                return SKIPPED
            _rows.transition(row_id, "pending", "sending")
            return tx

    async def _icy_received(self, conn: AsyncConnection, icy_tx: str, icy: int) -> bool:
        """Whether ``icy_tx`` holds an indexed ICY transfer of at least ``icy`` into the signer wallet."""
        T = onchain_icy_transactions
        rows = await conn.execute(
            select(T.c.amount).where(
                func.lower(T.c.transaction_hash) == icy_tx.lower(),
                func.lower(T.c.to_address) == self.signer.address.lower(),
            )
        )
        return any(int(amount) >= icy for (amount,) in rows)

    async def _build(self, conn: AsyncConnection, icy: int, btc_address: str, sats: int) -> SwapTx:
        auth = self.signer.sign(icy, btc_address, sats, now=self.clock())
        nonce = await next_nonce(conn, self.evm, self.signer.address)
        fees = await market_fees(self.evm)
        call = {
            "from": self.signer.address,
            "to": self.contract,
            "data": "0x" + authorisation_calldata(auth).hex(),
            "value": "0x0",
        }
        gas = await self.evm.estimate_gas(call) * GAS_HEADROOM_NUM // GAS_HEADROOM_DEN
        return sign_swap_tx(self._key, self.settings.chain_id, self.contract, auth, nonce=nonce, gas=gas, fees=fees)

    async def _send(self, row_id: int, raw: str, tx_hash: str, report: SwapRequestReport) -> str | None:
        try:
            await self.evm.send_raw_transaction(raw)
        except JsonRpcError as exc:
            if "already known" in exc.message.lower():
                report.sent.append(row_id)  # the node has exactly these bytes already
                return None
            # "nonce too low", underpriced…: one endpoint's batch decides on the next run.
            log.info("swap request %d: node answered the send with an error; will reconcile", row_id)
            log.debug("swap request %d: send error %s", row_id, exc.message)
            return "send_rejected"
        except UpstreamError as exc:
            log.info("swap request %d: send outcome unknown (%s); will reconcile", row_id, error_class(exc))
            return "send_" + error_class(exc)
        report.sent.append(row_id)
        return None

    # ------------------------------------------------------------------ sending → completed / failed / pending

    async def reconcile(self, row_id: int, report: SwapRequestReport) -> str | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(R).where(R.c.id == row_id, R.c.status == "sending"))).mappings().first()
        if row is None:
            return SKIPPED
        raw, current = str(row["signed_tx"]), str(row["evm_tx_hash"])
        stored = decode_stored(raw)
        nonce = stored.nonce if row["evm_nonce"] is None else int(row["evm_nonce"])
        hashes = [current, *str(row["replaced_tx_hashes"] or "").split()]
        try:
            view = await read_view(self.evm, self.signer.address, hashes)
        except UpstreamError as exc:
            return "reconcile_" + error_class(exc)
        settled = await self._settle(row_id, current, view, report)
        if settled is not None:
            return settled or None
        if view.nonce_count <= nonce:
            # The nonce is still free on this endpoint: one of our transactions may yet be mined.
            deadline = row["signature_deadline"]
            if deadline is not None and int(deadline) - self.clock() < REPLACE_BEFORE_DEADLINE:
                if len(hashes) <= MAX_REPLACEMENTS:
                    return await self._replace(row, stored.gas, stored.fees, nonce, hashes, report)
                log.warning(
                    "swap request %d: unmined after %d replacements; a person must look", row_id, len(hashes) - 1
                )
                await self._send(row_id, raw, current, report)
                return "replacement_limit"
            return await self._send(row_id, raw, current, report)
        if view.knows_any():
            return None  # the endpoint is between states; the next run sees it settled
        # The signer's nonce is used and this endpoint knows none of our transactions. Give up on them only when
        # one endpoint, in one batch, shows the nonce used at a block BLOCKCHAIN_CONFIRMATIONS deep, and still
        # knows none of them.
        confirmations = self.settings.BLOCKCHAIN_CONFIRMATIONS
        deep = max(view.head - confirmations, 0)
        try:
            deep_view = await read_view(self.evm, self.signer.address, hashes, deep)
        except UpstreamError as exc:
            return "reconcile_" + error_class(exc)
        settled = await self._settle(row_id, current, deep_view, report)
        if settled is not None:
            return settled or None
        if deep_view.head - deep >= confirmations and deep_view.nonce_count > nonce and not deep_view.knows_any():
            return await self._back_to_pending(row_id, current, report)
        return None  # not deep enough on one endpoint yet

    async def _settle(self, row_id: int, current: str, view: ChainView, report: SwapRequestReport) -> str | None:
        """Decide on a receipt of any of the request's transactions: ``""`` completed, a reason when failed,
        None when this endpoint has no receipt."""
        mined = view.mined()
        if mined is None:
            return None
        tx_hash, receipt = mined
        if receipt.status == 1:
            return await self._finish(row_id, current, tx_hash, "completed", None, report) or ""
        return await self._finish(row_id, current, tx_hash, "failed", "reverted", report) or ""

    async def _replace(
        self, row: Any, gas: int, old_fees: Fees, nonce: int, hashes: list[str], report: SwapRequestReport
    ) -> str | None:
        """Same nonce, same amounts, a fresh authorisation and deadline, both fee caps raised ≥ 10 %; stored
        (with the superseded hashes) before it is sent."""
        row_id, current = int(row["id"]), hashes[0]
        try:
            fees = old_fees.bumped(await market_fees(self.evm))
        except UpstreamError as exc:
            return "replace_" + error_class(exc)
        icy, address, sats = int(row["icy_amount"]), str(row["btc_address"]), int(row["btc_amount"])
        auth = self.signer.sign(icy, address, sats, now=self.clock())
        tx = sign_swap_tx(self._key, self.settings.chain_id, self.contract, auth, nonce=nonce, gas=gas, fees=fees)
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                R,
                row_id,
                "sending",
                R.c.evm_tx_hash == current,
                evm_tx_hash=tx.hash,
                signed_tx=tx.raw,
                evm_nonce=nonce,
                signature_deadline=tx.deadline,
                replaced_tx_hashes=" ".join(hashes),
            )
        if not moved:
            return SKIPPED
        report.replaced.append(row_id)
        _rows.stays(row_id, "sending", "replaced_at_same_nonce")
        return await self._send(row_id, tx.raw, tx.hash, report)

    async def _finish(
        self, row_id: int, current: str, mined: str, status: str, reason: str | None, report: SwapRequestReport
    ) -> str | None:
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                R,
                row_id,
                "sending",
                R.c.evm_tx_hash == current,
                status=status,
                evm_tx_hash=mined,  # the transaction that was mined (a superseded one may have won)
                failure_reason=reason,
                processed_at=utcnow(),
            )
        if not moved:
            return SKIPPED
        _rows.transition(row_id, "sending", status, reason)
        if status == "completed":
            report.completed.append(row_id)
            return None
        report.failed[row_id] = reason or "failed"
        return reason

    async def _back_to_pending(self, row_id: int, tx_hash: str, report: SwapRequestReport) -> str:
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                R,
                row_id,
                "sending",
                R.c.evm_tx_hash == tx_hash,
                status="pending",
                signed_tx=None,
                evm_tx_hash=None,
                evm_nonce=None,
                signature_deadline=None,
                replaced_tx_hashes=None,
                failure_reason="nonce_taken",
            )
        if moved:
            report.returned_to_pending.append(row_id)
            _rows.transition(row_id, "sending", "pending", "nonce_taken")
        return "nonce_taken"

    # ------------------------------------------------------------------ helpers

    async def _fail(
        self, conn: AsyncConnection, row_id: int, expected: str, reason: str, report: SwapRequestReport
    ) -> None:
        if await fail_row(conn, R, row_id, expected, reason):
            report.failed[row_id] = reason
            _rows.transition(row_id, expected, "failed", reason)

    async def _defer(self, conn: AsyncConnection, row_id: int, reason: str, report: SwapRequestReport) -> str:
        await conn.execute(
            update(R)
            .where(R.c.id == row_id, R.c.status == "pending")
            .values(failure_reason=reason, updated_at=utcnow())
        )
        report.deferred[row_id] = reason
        _rows.stays(row_id, "pending", reason)
        return reason

    def _sender_lock(self) -> AbstractAsyncContextManager[Any]:
        # On PostgreSQL the advisory lock covers every process; SQLite has none, so one process serialises.
        if is_postgres(self.engine):
            return nullcontext()
        return process_lock(f"evm-signer:{self.signer.address}")


async def count_waiting(engine: AsyncEngine) -> int:
    """Requests not yet settled (``pending`` or ``sending``), for the pending gauge."""
    return await count_rows(engine, R, ("pending", "sending"))


__all__ = ["SKIPPED", "SwapRequestProcessor", "SwapRequestReport", "count_waiting", "swap_calldata"]
