"""BTC payouts (SPEC §9 payouts, steps 1–6): pay every pending row exactly once, across crashes and replicas.

State machine of ``onchain_btc_processed_transactions.status``::

    pending ──build+sign, store raw tx + txid──▶ broadcasting ──accepted / node knows the tx──▶ completed
       ▲  │                                        │  ▲
       │  └─never-clearing error──▶ failed         │  └─timeout, crash, conflict: stays; re-broadcast same raw tx
       └──────── every input proven spent by a different *confirmed* tx ◀┘

Guards against paying twice:

* The raw transaction and its txid are committed (``broadcasting``) **before** the broadcast, so whatever
  happens next, the only transaction that can ever pay the row is that one, until its inputs are proven spent
  elsewhere — then it can never confirm and a new one may be built.
* Building happens under a wallet lock (``pg_advisory_xact_lock`` on PostgreSQL plus an in-process lock) in
  the same DB transaction that claims the row (``FOR UPDATE SKIP LOCKED``) and stores it as ``broadcasting``,
  so two processors never pick the same row, and coins spent by a ``broadcasting`` row are never selected.
* Every transition is a compare-and-set ``UPDATE … WHERE status = <expected>``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import anyio.lowlevel
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.clients.errors import BroadcastRejected, UpstreamError, error_class
from icy_backend.clients.esplora import EsploraClient
from icy_backend.clients.prices import PriceClient
from icy_backend.db.engine import is_postgres
from icy_backend.db.tables import onchain_btc_processed_transactions as payouts_table
from icy_backend.db.types import utcnow
from icy_backend.domain.btc_address import BtcAddress, InvalidAddress, parse_address
from icy_backend.domain.btc_tx import BuiltTx, PayoutBuildError, Utxo, build_payout, fee_rate, parse_raw
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
from icy_backend.domain.wallet import PayoutWallet
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

T = payouts_table
# pg_advisory_xact_lock key serialising payout building across replicas ("icy payout" as ASCII, fits int64).
WALLET_LOCK_KEY = 0x6963792D706179
_rows = RowLog(log, "payout")
RECENT_COMPLETED = timedelta(days=1)

# Node answers to a broadcast, by what they mean for the stored transaction.
_ALREADY_KNOWN = ("already in block chain", "txn-already-known", "txn-already-in-mempool", "already known")
_MAY_STILL_CONFIRM = (
    # Inputs spent or in conflict: the reconciliation decides (outspend proofs), never a guess here.
    "missingorspent",
    "missing-inputs",
    "missing inputs",
    "mempool-conflict",
    "spends-conflicting",
    "insufficient fee",
    # Policy of this node now; the same transaction may be accepted later or elsewhere.
    "min relay fee not met",
    "mempool min fee not met",
    "mempool full",
    "too-long-mempool-chain",
    "non-final",
    "non-bip68-final",
)


@dataclass
class PayoutRunReport:
    """What one run did (row ids only: no addresses or amounts)."""

    completed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    unconfirmed: dict[int, str] = field(default_factory=dict)
    returned_to_pending: list[int] = field(default_factory=list)


class PayoutProcessor:
    """Processes the payout queue. ``before_broadcast(row_id)`` is a test seam run after the commit of
    ``broadcasting`` and before the broadcast (a crash there must be recoverable)."""

    def __init__(
        self,
        engine: AsyncEngine,
        esplora: EsploraClient,
        prices: PriceClient,
        settings: Settings,
        wallet: PayoutWallet,
        *,
        before_broadcast: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.esplora = esplora
        self.prices = prices
        self.settings = settings
        self.wallet = wallet
        self.network = settings.btc_network
        self.before_broadcast = before_broadcast
        self._fees: Mapping[str, float] | None = None

    # ------------------------------------------------------------------ the run

    async def run(self, on_item: ItemHook | None = None) -> PayoutRunReport:
        """Reconcile every ``broadcasting`` row, then try every ``pending`` row once."""
        report = PayoutRunReport()
        self._fees = None  # fee estimates are read once per run

        await run_queue(
            _rows,
            self.engine,
            T,
            "broadcasting",
            lambda row_id: self.reconcile(row_id, report),
            lambda row_id: self.process(row_id, report),
            on_item,
        )
        return report

    # ------------------------------------------------------------------ pending → broadcasting → completed

    async def process(self, row_id: int, report: PayoutRunReport) -> str | None:
        """Claim, build, store and broadcast one pending row. Returns None on success, else a failure class,
        or :data:`SKIPPED` when another processor had the row."""
        claimed = await self._claim_and_store(row_id, report)
        if isinstance(claimed, str):
            return claimed
        if self.before_broadcast is not None:
            await self.before_broadcast(row_id)
        return await self._broadcast(row_id, claimed, report)

    async def _claim_and_store(self, row_id: int, report: PayoutRunReport) -> BuiltTx | str:
        async with self._wallet_lock(), self.engine.begin() as conn:
            if is_postgres(self.engine):
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WALLET_LOCK_KEY})
            query = select(T).where(T.c.id == row_id, T.c.status == "pending")
            if is_postgres(self.engine):
                query = query.with_for_update(skip_locked=True)
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return SKIPPED  # taken by another processor, or no longer pending
            try:
                recipient = parse_address(str(row["btc_address"]), self.network)
            except InvalidAddress as exc:
                reason = "wrong_network" if exc.reason == "wrong_network" else "invalid_address"
                await self._fail(conn, row_id, "pending", reason, report)
                return reason
            amount = int(row["total"])
            if amount < recipient.dust_limit:
                await self._fail(conn, row_id, "pending", "below_dust", report)
                return "below_dust"
            reserved = await _reserved_outpoints(conn)
            try:
                built = await self._build(recipient, amount, reserved)
            except PayoutBuildError as exc:
                if not exc.clears:
                    await self._fail(conn, row_id, "pending", exc.reason, report)
                    return exc.reason
                await self._defer(conn, row_id, exc.reason, report)
                return exc.reason
            except UpstreamError as exc:
                reason = error_class(exc)
                await self._defer(conn, row_id, reason, report)
                return reason
            result = await conn.execute(
                update(T)
                .where(T.c.id == row_id, T.c.status == "pending")
                .values(
                    status="broadcasting",
                    raw_tx=built.raw_hex,
                    btc_transaction_hash=built.txid,
                    network_fee=built.fee,
                    failure_reason=None,
                    attempts=T.c.attempts + 1,
                    updated_at=utcnow(),
                )
            )
            if result.rowcount != 1:
                return SKIPPED
            _rows.transition(row_id, "pending", "broadcasting")
            return built

    async def _build(self, recipient: BtcAddress, amount: int, reserved: set[tuple[str, int]]) -> BuiltTx:
        coins = [Utxo(u.txid, u.vout, u.value, u.confirmed) for u in await self.esplora.utxos(self.wallet.address)]
        if self._fees is None:
            self._fees = await self.esplora.fee_estimates()
        rate = fee_rate(self._fees)
        price = await self.prices.btc_usd()
        # Signing is CPU work (a few ms per input): keep it off the event loop.
        return await anyio.to_thread.run_sync(
            lambda: build_payout(
                self.wallet,
                recipient,
                amount,
                coins,
                sat_per_vbyte=rate,
                btc_usd=price,
                max_fee_usd=self.settings.BTC_MAX_TX_FEE_USD,
                reserved=reserved,
            )
        )

    async def _broadcast(self, row_id: int, built: BuiltTx, report: PayoutRunReport) -> str | None:
        try:
            await self.esplora.broadcast(built.raw_hex)
        except BroadcastRejected as exc:
            return await self._rejected(row_id, built.txid, exc, report)
        except UpstreamError as exc:
            # Timeout, reset, breaker open: the tx may or may not have reached the network. It stays
            # ``broadcasting``; the next run finds out (status, outspends) and re-broadcasts the same bytes.
            reason = error_class(exc)
            report.unconfirmed[row_id] = reason
            log.info("payout %d: broadcast outcome unknown (%s); will reconcile", row_id, reason)
            return "broadcast_" + reason
        return await self._complete(row_id, built.txid, report)

    async def _rejected(self, row_id: int, txid: str, exc: BroadcastRejected, report: PayoutRunReport) -> str | None:
        text_ = exc.reason.lower()
        log.debug("payout %d: node rejected broadcast: %s", row_id, exc.reason)
        if any(hint in text_ for hint in _ALREADY_KNOWN):
            return await self._complete(row_id, txid, report)
        if any(hint in text_ for hint in _MAY_STILL_CONFIRM):
            report.unconfirmed[row_id] = "broadcast_deferred"
            log.info("payout %d: broadcast deferred by the node; will reconcile", row_id)
            return "broadcast_deferred"
        # The node says this transaction is invalid (bad signature, dust, malformed…): it can never confirm
        # anywhere, so failing the row cannot pay twice; a person has to look at it.
        async with self.engine.begin() as conn:
            await self._fail(conn, row_id, "broadcasting", "rejected_invalid", report, txid=txid)
        return "rejected_invalid"

    async def _complete(self, row_id: int, txid: str, report: PayoutRunReport) -> str | None:
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                T,
                row_id,
                "broadcasting",
                T.c.btc_transaction_hash == txid,
                status="completed",
                processed_at=utcnow(),
                failure_reason=None,
            )
        if moved:
            report.completed.append(row_id)
            _rows.transition(row_id, "broadcasting", "completed")
            return None
        return SKIPPED  # another processor completed it first

    # ------------------------------------------------------------------ reconciliation of broadcasting rows

    async def reconcile(self, row_id: int, report: PayoutRunReport) -> str | None:
        """Settle one ``broadcasting`` row: known tx → completed; inputs provably spent elsewhere → pending;
        otherwise re-broadcast the very same raw transaction."""
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(T).where(T.c.id == row_id, T.c.status == "broadcasting"))).mappings().first()
            )
        if row is None:
            return SKIPPED
        txid, raw = str(row["btc_transaction_hash"]), str(row["raw_tx"])
        try:
            if await self.esplora.tx_status(txid) is not None:
                return await self._complete(row_id, txid, report)
            if await self._spent_elsewhere(txid, raw):
                return await self._back_to_pending(row_id, txid, report)
        except UpstreamError as exc:
            report.unconfirmed[row_id] = error_class(exc)
            return "reconcile_" + error_class(exc)
        built = BuiltTx(raw, txid, int(row["network_fee"] or 0), int(row["total"]), 0, 0, ())
        return await self._broadcast(row_id, built, report)

    async def _spent_elsewhere(self, txid: str, raw: str) -> bool:
        """True only when every input of the stored tx is spent by a different, confirmed transaction."""
        stored_txid, inputs = parse_raw(raw)
        if stored_txid != txid or not inputs:
            return False
        for in_txid, vout in inputs:
            spend = await self.esplora.outspend(in_txid, vout)
            if not spend.spent or spend.txid is None or spend.txid == txid:
                return False
            if spend.status is None or not spend.status.confirmed:
                return False  # a mempool conflict can still be evicted; not a proof
        return True

    async def _back_to_pending(self, row_id: int, txid: str, report: PayoutRunReport) -> str:
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                T,
                row_id,
                "broadcasting",
                T.c.btc_transaction_hash == txid,
                status="pending",
                raw_tx=None,
                btc_transaction_hash=None,
                network_fee=None,
                failure_reason="inputs_spent_elsewhere",
            )
        if moved:
            report.returned_to_pending.append(row_id)
            _rows.transition(row_id, "broadcasting", "pending", "inputs_spent_elsewhere")
        return "inputs_spent_elsewhere"

    # ------------------------------------------------------------------ helpers

    async def _fail(
        self,
        conn: AsyncConnection,
        row_id: int,
        expected: str,
        reason: str,
        report: PayoutRunReport,
        *,
        txid: str | None = None,
    ) -> None:
        where = [T.c.btc_transaction_hash == txid] if txid is not None else []
        if await fail_row(conn, T, row_id, expected, reason, *where):
            report.failed[row_id] = reason
            _rows.transition(row_id, expected, "failed", reason)

    async def _defer(self, conn: AsyncConnection, row_id: int, reason: str, report: PayoutRunReport) -> None:
        await conn.execute(
            update(T)
            .where(T.c.id == row_id, T.c.status == "pending")
            .values(attempts=T.c.attempts + 1, failure_reason=reason, updated_at=utcnow())
        )
        report.deferred[row_id] = reason
        _rows.stays(row_id, "pending", reason)

    def _wallet_lock(self) -> anyio.Lock:
        return process_lock(f"btc-wallet:{self.wallet.address}")


async def _reserved_outpoints(conn: AsyncConnection) -> set[tuple[str, int]]:
    """Coins spent by stored transactions: every ``broadcasting`` row, and rows completed in the last day.

    The second set matters with several Esplora endpoints: one that has not seen a fresh payout in its mempool
    still lists its coins as unspent, and a second payout built on them could land in another node's mempool.
    """
    recent = utcnow() - RECENT_COMPLETED
    rows = await conn.execute(
        select(T.c.raw_tx).where(
            (T.c.status == "broadcasting") | ((T.c.status == "completed") & (T.c.processed_at >= recent))
        )
    )
    reserved: set[tuple[str, int]] = set()
    for (raw,) in rows:
        if raw:
            reserved.update(parse_raw(str(raw))[1])
    return reserved


async def count_waiting(engine: AsyncEngine, statuses: Sequence[str] = ("pending", "broadcasting")) -> int:
    """Rows still to be paid (for ``icy_backend_pending_transactions{transaction_type="btc_payout"}``)."""
    return await count_rows(engine, T, statuses)


__all__ = ["SKIPPED", "WALLET_LOCK_KEY", "PayoutProcessor", "PayoutRunReport", "count_waiting"]
