"""Swap requests (SPEC §9): swap ICY the user sent to the signer wallet, by calling ``swap(...)`` on their behalf.

State machine of ``swap_requests.status``::

    pending ──ICY transfer indexed; convert, sign, store signed tx + hash──▶ sending ──receipt ok──▶ completed
       ▲  └─never payable (bad address, below dust)──▶ failed                 │ ──receipt reverted──▶ failed
       └──────────── the tx's nonce was used by another, mined tx ◀───────────┘

The signed transaction and its hash are committed (``sending``) **before** the send: a retry (timeout, crash,
next run) re-sends the very same bytes, so the request can never swap twice. A stored transaction is given up
only when the signer's *mined* nonce moved past its nonce while its own receipt does not exist: it can never be
mined then. The ``Swap`` event of a completed request becomes a payout through the swap indexer like any other.

Conversion (fix: the old one was 100x too large): ``sats = icy_wei // (ratio * 100)`` with the pricing ratio
(ICY per BTC x 10^8). No service fee is taken here; the payout of the ``Swap`` event takes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
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
from icy_backend.domain.swap_validation import PricingUnavailable, SwapRejected, check_address, check_payable
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

R = swap_requests
SWAP_SELECTOR = keccak(text="swap(uint256,string,uint256,uint256,uint256,bytes)")[:4]
SWAP_ARG_TYPES = ["uint256", "string", "uint256", "uint256", "uint256", "bytes"]
GAS_HEADROOM_NUM, GAS_HEADROOM_DEN = 12, 10  # estimate x 1.2
SENDER_LOCK_KEY = 0x6963792D737770  # "icy-swp": serialises nonce allocation of the signer wallet
_rows = RowLog(log, "swap request")


def swap_calldata(icy: int, btc_address: str, sats: int, nonce: int, deadline: int, signature: bytes) -> bytes:
    return SWAP_SELECTOR + abi_encode(SWAP_ARG_TYPES, [icy, btc_address, sats, nonce, deadline, signature])


@dataclass
class SwapRequestReport:
    sent: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    waiting: list[int] = field(default_factory=list)  # ICY transfer not indexed yet
    returned_to_pending: list[int] = field(default_factory=list)


class SwapRequestProcessor:
    """Processes ``swap_requests``; one instance per app (the signer key stays inside)."""

    def __init__(
        self,
        engine: AsyncEngine,
        evm: EvmRpcClient,
        oracle: OracleService,
        settings: Settings,
    ) -> None:
        key = settings.BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY
        contract = settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR
        if key is None or not key.get_secret_value() or not contract:
            raise ValueError("BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY and BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR are required")
        self.engine = engine
        self.evm = evm
        self.oracle = oracle
        self.settings = settings
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
        raw, tx_hash = stored
        return await self._send(row_id, raw, tx_hash, report)

    async def _claim_and_store(self, row_id: int, report: SwapRequestReport) -> tuple[str, str] | str:
        async with self._sender_lock(), self.engine.begin() as conn:
            if is_postgres(self.engine):
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
                raw, tx_hash = await self._build(icy, address.text, sats)
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
                    signed_tx=raw,
                    evm_tx_hash=tx_hash,
                    failure_reason=None,
                    updated_at=utcnow(),
                )
            )
            if result.rowcount != 1:
                return SKIPPED
            _rows.transition(row_id, "pending", "sending")
            return raw, tx_hash

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

    async def _build(self, icy: int, btc_address: str, sats: int) -> tuple[str, str]:
        auth = self.signer.sign(icy, btc_address, sats)
        data = swap_calldata(icy, btc_address, sats, auth.nonce, auth.deadline, auth.signature_bytes)
        sender = self.signer.address
        nonce = await self.evm.transaction_count(sender, "pending")
        block = await self.evm.block_by_number("latest")
        base_fee = block.base_fee_per_gas if block is not None and block.base_fee_per_gas is not None else 0
        priority = await self.evm.max_priority_fee_per_gas()
        call = {"from": sender, "to": self.contract, "data": "0x" + data.hex(), "value": "0x0"}
        gas = await self.evm.estimate_gas(call)
        tx = {
            "type": 2,
            "chainId": self.settings.chain_id,
            "nonce": nonce,
            "to": self.contract,
            "value": 0,
            "data": data,
            "gas": gas * GAS_HEADROOM_NUM // GAS_HEADROOM_DEN,
            "maxPriorityFeePerGas": priority,
            "maxFeePerGas": 2 * base_fee + priority,
        }
        signed = Account.sign_transaction(tx, self._key)
        return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()

    async def _send(self, row_id: int, raw: str, tx_hash: str, report: SwapRequestReport) -> str | None:
        try:
            await self.evm.send_raw_transaction(raw)
        except JsonRpcError as exc:
            if "already known" in exc.message.lower():
                report.sent.append(row_id)  # the node has exactly these bytes already
                return None
            # "nonce too low", underpriced…: the receipt and the mined nonce decide on the next run.
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
        raw, tx_hash = str(row["signed_tx"]), str(row["evm_tx_hash"])
        try:
            # Order matters: the mined nonce is read before the receipt, so "nonce used and no receipt"
            # cannot be fooled by our own tx being mined in between.
            mined_nonce = await self.evm.transaction_count(self.signer.address, "latest")
            receipt = await self.evm.transaction_receipt(tx_hash)
        except UpstreamError as exc:
            return "reconcile_" + error_class(exc)
        if receipt is not None:
            if receipt.status == 1:
                return await self._finish(row_id, tx_hash, "completed", None, report)
            return await self._finish(row_id, tx_hash, "failed", "reverted", report)
        if mined_nonce > _nonce_of(raw):
            # Belt and braces: the node must not know our tx at all (a node that counts pending txs under
            # "latest" would otherwise make a pending tx look dead — and a rebuilt tx would swap twice).
            try:
                known = await self.evm.transaction_by_hash(tx_hash)
            except UpstreamError as exc:
                return "reconcile_" + error_class(exc)
            if known is None:
                return await self._back_to_pending(row_id, tx_hash, report)
        return await self._send(row_id, raw, tx_hash, report)

    async def _finish(
        self, row_id: int, tx_hash: str, status: str, reason: str | None, report: SwapRequestReport
    ) -> str | None:
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                R,
                row_id,
                "sending",
                R.c.evm_tx_hash == tx_hash,
                status=status,
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
                failure_reason="nonce_replaced",
            )
        if moved:
            report.returned_to_pending.append(row_id)
            _rows.transition(row_id, "sending", "pending", "nonce_replaced")
        return "nonce_replaced"

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

    def _sender_lock(self) -> anyio.Lock:
        return process_lock(f"evm-signer:{self.signer.address}")


def _nonce_of(raw: str) -> int:
    tx: Any = TypedTransaction.from_bytes(HexBytes(raw))
    return int(tx.as_dict()["nonce"])


async def count_waiting(engine: AsyncEngine) -> int:
    """Requests not yet settled (``pending`` or ``sending``), for the pending gauge."""
    return await count_rows(engine, R, ("pending", "sending"))


__all__ = ["SKIPPED", "SwapRequestProcessor", "SwapRequestReport", "count_waiting", "swap_calldata"]
