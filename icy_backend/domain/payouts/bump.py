"""Fee bumping by replacement (SPEC §9 payouts step 6).

A replacement spends every input of the payout's first candidate (it may add coins, never drops one), so any
two candidates of a payout conflict and at most one can ever confirm. It pays the same output to the user, at
least the old fee plus 1 sat/vB of its own size and at least the current estimate, under the USD fee cap. It is
stored as a new candidate (row ``broadcasting``) before it is sent.
"""

from __future__ import annotations

from decimal import Decimal

import anyio
from sqlalchemy import select

from icy_backend.clients.errors import UpstreamError, error_class
from icy_backend.db.engine import is_postgres
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.domain.btc_address import parse_address
from icy_backend.domain.btc_tx import BuiltTx, FeeCapExceeded, PayoutBuildError, build_replacement, raw_vsize
from icy_backend.domain.payouts.base import PayoutRunReport, rate_text, rows_log
from icy_backend.domain.payouts.refusals import Answer
from icy_backend.domain.payouts.send import SendStep
from icy_backend.domain.payouts.store import Candidate, candidates, insert_candidate, reserved_outpoints
from icy_backend.domain.row_machine import SKIPPED, move_row


class _Lost(Exception):
    """Another writer moved the row while the replacement was built: roll the candidate back."""


class BumpStep(SendStep):
    async def bump(self, row_id: int, expected: str, report: PayoutRunReport) -> str | None:
        """Build, store and send one replacement for the row (at most one per row per run)."""
        try:
            rate = await self.fee_rate()
            price = await self.prices.btc_usd()
            tip = await self.tip()
            stored = await self._store_replacement(row_id, expected, rate, price, tip, report)
        except _Lost:
            return SKIPPED
        except UpstreamError as exc:
            return await self.stays(row_id, expected, error_class(exc), report)
        except PayoutBuildError as exc:
            return await self.stays(row_id, expected, exc.reason, report)
        if isinstance(stored, str):
            return stored
        cand, others_live = stored
        await self.point("bump_stored", row_id)
        answer, detail = await self.send(row_id, cand)
        if answer in (Answer.ACCEPTED, Answer.KNOWN):
            report.bumps.append("replaced")
            rows_log.stays(row_id, "broadcasting", "fee bumped")
        return await self.settle_send(row_id, "broadcasting", cand, answer, detail, report, others_live=others_live)

    async def _store_replacement(
        self, row_id: int, expected: str, rate: int, price: Decimal, tip: int, report: PayoutRunReport
    ) -> tuple[Candidate, bool] | str:
        async with self.wallet_lock(), self.engine.begin() as conn:
            await self.lock_wallet(conn)
            query = select(T).where(T.c.id == row_id, T.c.status == expected)
            if is_postgres(self.engine):
                query = query.with_for_update()
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return SKIPPED
            live = await candidates(conn, row_id)
            if not live:
                return SKIPPED
            first, newest = live[0], live[-1]
            required = [await self.prevout(t, v) for t, v in first.inputs]
            reserved = await reserved_outpoints(conn, except_payout=row_id)
            coins = [c for c in await self.wallet_coins() if c.outpoint not in reserved]
            recipient = parse_address(str(row["btc_address"]), self.network)
            try:
                built: BuiltTx = await anyio.to_thread.run_sync(
                    lambda: build_replacement(
                        self.wallet,
                        recipient,
                        int(row["total"]),
                        required,
                        coins,
                        sat_per_vbyte=rate,
                        old_fee=newest.fee,
                        old_vsize=raw_vsize(newest.raw_tx),
                        btc_usd=price,
                        max_fee_usd=self.settings.BTC_MAX_TX_FEE_USD,
                    )
                )
            except FeeCapExceeded:
                # At the cap bumping stops; the row waits (the age alert pages) and completes if fees fall.
                report.bumps.append("capped")
                await move_row(
                    conn,
                    T,
                    row_id,
                    expected,
                    status=expected,
                    attempts=T.c.attempts + 1,
                    failure_reason="fee_cap_exceeded",
                )
                report.unconfirmed[row_id] = "fee_cap_exceeded"
                rows_log.stays(row_id, expected, "fee bump capped")
                return "fee_cap_exceeded"
            new_id = await insert_candidate(conn, row_id, built, rate_text(built), tip)
            moved = await move_row(
                conn,
                T,
                row_id,
                expected,
                status="broadcasting",
                btc_transaction_hash=built.txid,
                raw_tx=built.raw_hex,
                network_fee=built.fee,
                attempts=T.c.attempts + 1,
            )
            if not moved:
                raise _Lost
        if expected != "broadcasting":
            rows_log.transition(row_id, expected, "broadcasting", "fee bump")
        cand = Candidate(new_id, row_id, built.txid, built.raw_hex, built.fee, rate_text(built), tip, "active")
        return cand, True


__all__ = ["BumpStep"]
