"""Reconciliation of ``broadcasting`` and ``confirming`` rows (SPEC §9 payouts steps 5, 6 and 7).

Every run, before any new payout is built, each in-flight row is compared with the chain:

* a candidate with ``BTC_PAYOUT_CONFIRMATIONS`` confirmations → ``completed`` with that candidate's txid and
  fee (``completed`` is final); fewer → ``confirming`` with the count kept up to date (a reorg that takes a
  confirmation away simply lowers it);
* a candidate in the mempool → ``confirming``; bumped when it has waited ``BTC_PAYOUT_BUMP_AFTER_BLOCKS`` blocks
  while the estimate rose above its rate;
* no candidate known → the row goes back to ``pending`` only on proof that none can ever confirm (one input of
  the first candidate spent by a transaction that is none of the candidates, with at least 6 confirmations);
  otherwise the newest candidate is sent again with the same bytes (a fee refusal builds a replacement).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from icy_backend.clients.errors import UpstreamError, error_class
from icy_backend.clients.esplora import TxStatus
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.db.types import utcnow
from icy_backend.domain.btc_tx import PayoutBuildError
from icy_backend.domain.payouts.base import DEAD_PROOF_CONFIRMATIONS, WAITING, PayoutRunReport, rows_log
from icy_backend.domain.payouts.bump import BumpStep
from icy_backend.domain.payouts.refusals import Answer
from icy_backend.domain.payouts.store import IN_FLIGHT, Candidate, candidates, mark_candidates
from icy_backend.domain.row_machine import SKIPPED, move_row


class ReconcileStep(BumpStep):
    async def reconcile(self, row_id: int, report: PayoutRunReport) -> str | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(T).where(T.c.id == row_id, T.c.status.in_(IN_FLIGHT)))).mappings().first()
            live = await candidates(conn, row_id) if row is not None else []
            everything = await candidates(conn, row_id, live_only=False) if row is not None else []
        if row is None:
            return SKIPPED
        status = str(row["status"])
        if not live:
            # Nothing that could confirm was ever stored (or every candidate is dead): nothing can pay it.
            return await self._back_to_pending(row_id, status, report, "no_candidate")
        try:
            return await self._reconcile(row_id, status, int(row["confirmations"]), live, everything, report)
        except UpstreamError as exc:
            return await self.stays(row_id, status, error_class(exc), report)
        except PayoutBuildError as exc:
            return await self.stays(row_id, status, exc.reason, report)

    async def _reconcile(
        self,
        row_id: int,
        status: str,
        confirmations: int,
        live: list[Candidate],
        everything: list[Candidate],
        report: PayoutRunReport,
    ) -> str | None:
        tip = await self.tip()
        seen: list[tuple[Candidate, TxStatus]] = []
        for cand in reversed(live):  # newest first
            st = await self.esplora.tx_status(cand.txid)
            if st is not None:
                seen.append((cand, st))
        confirmed = [(c, st) for c, st in seen if st.confirmed and st.block_height is not None]
        if confirmed:
            cand, st = confirmed[0]
            assert st.block_height is not None
            return await self._confirmed(row_id, status, cand, max(0, tip - st.block_height + 1), report)
        if seen:
            cand = seen[0][0]
            if status != "confirming" or confirmations != 0:
                async with self.engine.begin() as conn:
                    await move_row(
                        conn,
                        T,
                        row_id,
                        status,
                        status="confirming",
                        btc_transaction_hash=cand.txid,
                        raw_tx=cand.raw_tx,
                        network_fee=cand.fee,
                        confirmations=0,
                    )
                if status != "confirming":
                    rows_log.transition(row_id, status, "confirming")
                status = "confirming"
            newest = live[-1]
            if cand.id != newest.id:
                return await self._send_stored_replacement(row_id, status, newest, report)
            if await self._estimate_rose(newest, tip):
                return await self.bump(row_id, status, report)
            return WAITING
        if await self._proven_dead(live[0], {c.txid for c in everything}, tip):
            return await self._back_to_pending(row_id, status, report, "inputs_spent_elsewhere", dead=True)
        return await self._resend(row_id, status, live, report)

    async def _send_stored_replacement(
        self, row_id: int, status: str, newest: Candidate, report: PayoutRunReport
    ) -> str | None:
        """An older candidate is in the mempool, but a newer one (it pays more) was stored and the node does not
        have it: a crash between storing and sending it, or a refusal. Send it; it replaces the older one."""
        answer, _detail = await self.send(row_id, newest)
        if answer in (Answer.ACCEPTED, Answer.KNOWN):
            if await self.to_confirming(row_id, status, newest, report):
                report.bumps.append("replaced")
            return None
        return WAITING  # the older candidate is still in the mempool and may confirm

    async def _confirmed(
        self, row_id: int, status: str, cand: Candidate, confs: int, report: PayoutRunReport
    ) -> str | None:
        done = confs >= self.settings.BTC_PAYOUT_CONFIRMATIONS
        values = {
            "btc_transaction_hash": cand.txid,
            "raw_tx": cand.raw_tx,
            "network_fee": cand.fee,
            "confirmations": confs,
            "failure_reason": None,
        }
        async with self.engine.begin() as conn:
            if done:
                moved = await move_row(conn, T, row_id, status, status="completed", processed_at=utcnow(), **values)
            else:
                moved = await move_row(conn, T, row_id, status, status="confirming", **values)
        if not moved:
            return SKIPPED
        if done:
            report.completed.append(row_id)
            rows_log.transition(row_id, status, "completed")
            await self.point("settled", row_id)
            return None
        if status != "confirming":
            rows_log.transition(row_id, status, "confirming")
        return WAITING

    async def _estimate_rose(self, newest: Candidate, tip: int) -> bool:
        """Bump rule: unconfirmed for BTC_PAYOUT_BUMP_AFTER_BLOCKS blocks while the estimate rose above it."""
        if newest.broadcast_height is None:
            return False
        if tip - newest.broadcast_height < self.settings.BTC_PAYOUT_BUMP_AFTER_BLOCKS:
            return False
        return Decimal(await self.fee_rate()) > Decimal(newest.fee_rate)

    async def _proven_dead(self, first: Candidate, ours: set[str], tip: int) -> bool:
        """One input of the first candidate spent by a foreign transaction with ≥ 6 confirmations (step 7)."""
        for txid, vout in first.inputs:
            spend = await self.esplora.outspend(txid, vout)
            if not spend.spent or spend.txid is None or spend.txid in ours:
                continue
            st = spend.status
            if st is None or not st.confirmed or st.block_height is None:
                continue  # a mempool conflict can still be evicted: not a proof
            if tip - st.block_height + 1 >= DEAD_PROOF_CONFIRMATIONS:
                return True
        return False

    async def _back_to_pending(
        self, row_id: int, status: str, report: PayoutRunReport, reason: str, *, dead: bool = False
    ) -> str:
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                T,
                row_id,
                status,
                status="pending",
                raw_tx=None,
                btc_transaction_hash=None,
                network_fee=None,
                confirmations=0,
                failure_reason=reason,
            )
            if moved and dead:
                await mark_candidates(conn, row_id, "dead")  # their other inputs are free again
        if moved:
            report.returned_to_pending.append(row_id)
            rows_log.transition(row_id, status, "pending", reason)
            await self.point("settled", row_id)
        return reason

    async def _resend(self, row_id: int, status: str, live: list[Candidate], report: PayoutRunReport) -> str | None:
        """No candidate is known to the node: send the newest again (same bytes); a never-clearing refusal
        moves on to the older ones, and fails the row only when none of them can confirm."""
        remaining = list(live)
        while remaining:
            cand = remaining.pop()
            answer, detail = await self.send(row_id, cand)
            if answer is Answer.FEE and cand.id == live[-1].id:
                return await self.bump(row_id, status, report)
            outcome = await self.settle_send(row_id, status, cand, answer, detail, report, others_live=bool(remaining))
            if answer is not Answer.INVALID or not remaining:
                return outcome
        return WAITING


__all__ = ["ReconcileStep"]
