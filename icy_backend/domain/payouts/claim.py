"""Claim a pending payout, build and store its first candidate, send it (SPEC §9 payouts steps 1–4).

Claiming, the daily-limit check, coin selection and storing the candidate with the row ``broadcasting`` happen
in one DB transaction under the wallet lock (``pg_advisory_xact_lock`` on PostgreSQL plus an in-process lock),
with the row taken ``FOR UPDATE SKIP LOCKED``: two processors never pick the same row or the same coins, and the
daily outflow is read from the database so replicas agree.
"""

from __future__ import annotations

from decimal import Decimal

import anyio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from icy_backend.clients.errors import UpstreamError, error_class
from icy_backend.db.engine import is_postgres
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.db.types import utcnow
from icy_backend.domain.btc_address import BtcAddress, InvalidAddress, parse_address
from icy_backend.domain.btc_tx import BuiltTx, PayoutBuildError, build_payout
from icy_backend.domain.payouts.base import WAITING, PayoutRunReport, rate_text, rows_log
from icy_backend.domain.payouts.reconcile import ReconcileStep
from icy_backend.domain.payouts.refusals import Answer
from icy_backend.domain.payouts.store import Candidate, insert_candidate, outflow_24h, reserved_outpoints
from icy_backend.domain.row_machine import SKIPPED, fail_row, move_row

DAILY_LIMIT = "daily_limit"


class _Done(Exception):
    """The row was settled (failed or deferred) inside the claim transaction."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class ClaimStep(ReconcileStep):
    async def process(self, row_id: int, report: PayoutRunReport) -> str | None:
        """Claim, build, store and broadcast one pending row. Returns None on success, else a class."""
        try:
            claimed = await self._claim_and_store(row_id, report)
        except _Done as done:
            return done.outcome
        if isinstance(claimed, str):
            return claimed
        await self.point("stored", row_id)
        answer, detail = await self.send(row_id, claimed)
        if answer is Answer.FEE:
            return await self.bump(row_id, "broadcasting", report)
        return await self.settle_send(row_id, "broadcasting", claimed, answer, detail, report, others_live=False)

    async def _claim_and_store(self, row_id: int, report: PayoutRunReport) -> Candidate | str:
        async with self.wallet_lock(), self.engine.begin() as conn:
            await self.lock_wallet(conn)
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
                return await self._fail_in(conn, row_id, reason, report)
            amount = int(row["total"])
            if amount < recipient.dust_limit:
                return await self._fail_in(conn, row_id, "below_dust", report)
            limit = self.settings.BTC_PAYOUT_DAILY_LIMIT_SATS
            # Oldest first: once an older payout waits for room, younger ones wait too (unless the older one
            # alone exceeds the limit and could never go).
            if limit is not None and (self._limit_blocked or await outflow_24h(conn) + amount > limit):
                if amount <= limit:
                    self._limit_blocked = True
                return await self._defer_in(conn, row_id, DAILY_LIMIT, report)
            reserved = await reserved_outpoints(conn)
            try:
                built, tip = await self._build(recipient, amount, reserved)
            except PayoutBuildError as exc:
                if not exc.clears:
                    return await self._fail_in(conn, row_id, exc.reason, report)
                return await self._defer_in(conn, row_id, exc.reason, report)
            except UpstreamError as exc:
                return await self._defer_in(conn, row_id, error_class(exc), report)
            rate = rate_text(built)
            cand_id = await insert_candidate(conn, row_id, built, rate, tip)
            moved = await move_row(
                conn,
                T,
                row_id,
                "pending",
                status="broadcasting",
                raw_tx=built.raw_hex,
                btc_transaction_hash=built.txid,
                network_fee=built.fee,
                confirmations=0,
                failure_reason=None,
                attempts=T.c.attempts + 1,
                broadcast_at=func.coalesce(T.c.broadcast_at, utcnow()),
            )
            if not moved:
                raise _Done(SKIPPED)  # rolls the candidate back
        rows_log.transition(row_id, "pending", "broadcasting")
        return Candidate(cand_id, row_id, built.txid, built.raw_hex, built.fee, rate, tip, "active")

    async def _build(self, recipient: BtcAddress, amount: int, reserved: set[tuple[str, int]]) -> tuple[BuiltTx, int]:
        coins = await self.wallet_coins()
        rate = await self.fee_rate()
        price: Decimal = await self.prices.btc_usd()
        tip = await self.tip()
        # Signing is CPU work (a few ms per input): keep it off the event loop.
        built = await anyio.to_thread.run_sync(
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
        return built, tip

    async def _fail_in(self, conn: AsyncConnection, row_id: int, reason: str, report: PayoutRunReport) -> str:
        if await fail_row(conn, T, row_id, "pending", reason):
            report.failed[row_id] = reason
            rows_log.transition(row_id, "pending", "failed", reason)
        return reason

    async def _defer_in(self, conn: AsyncConnection, row_id: int, reason: str, report: PayoutRunReport) -> str:
        await move_row(conn, T, row_id, "pending", status="pending", attempts=T.c.attempts + 1, failure_reason=reason)
        report.deferred[row_id] = reason
        rows_log.stays(row_id, "pending", reason)
        return WAITING if reason == DAILY_LIMIT else reason


__all__ = ["DAILY_LIMIT", "ClaimStep"]
