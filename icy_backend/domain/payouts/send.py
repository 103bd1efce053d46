"""Broadcast one stored candidate and act on the node's answer (SPEC §9 payouts steps 4 and 9)."""

from __future__ import annotations

from icy_backend.clients.errors import BroadcastRejected, UpstreamError, error_class
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.domain.payouts.base import PayoutBase, PayoutRunReport, log, rows_log
from icy_backend.domain.payouts.refusals import Answer, classify
from icy_backend.domain.payouts.store import Candidate, candidates, mark_candidates
from icy_backend.domain.row_machine import move_row

UPSTREAM = "upstream"


class SendStep(PayoutBase):
    async def send(self, row_id: int, cand: Candidate) -> tuple[Answer | str, str | None]:
        """POST the candidate's bytes. Returns its answer class (or ``UPSTREAM`` with the error class)."""
        try:
            await self.esplora.broadcast(cand.raw_tx)
            answer: tuple[Answer | str, str | None] = (Answer.ACCEPTED, None)
        except BroadcastRejected as exc:
            log.debug("payout %d: node refused a broadcast: %s", row_id, exc.reason)
            answer = classify(exc.reason)
        except UpstreamError as exc:
            # Timeout, reset, breaker open, malformed refusal: the node may or may not have it. The row stays;
            # the next run finds out and re-broadcasts the same bytes.
            answer = (UPSTREAM, error_class(exc))
        await self.point("sent", row_id)
        return answer

    async def to_confirming(self, row_id: int, expected: str, cand: Candidate, report: PayoutRunReport) -> bool:
        """The node has ``cand``: the row is ``confirming`` (0 confirmations), older candidates ``replaced``."""
        async with self.engine.begin() as conn:
            moved = await move_row(
                conn,
                T,
                row_id,
                expected,
                status="confirming",
                btc_transaction_hash=cand.txid,
                raw_tx=cand.raw_tx,
                network_fee=cand.fee,
                confirmations=0,
                failure_reason=None,
            )
            if moved:
                older = [c.id for c in await candidates(conn, row_id) if c.id < cand.id and c.status == "active"]
                if older:
                    await mark_candidates(conn, row_id, "replaced", ids=older)
        if moved:
            if expected != "confirming":
                rows_log.transition(row_id, expected, "confirming")
            report.sent.append(row_id)
        return moved

    async def settle_send(
        self,
        row_id: int,
        expected: str,
        cand: Candidate,
        answer: Answer | str,
        detail: str | None,
        report: PayoutRunReport,
        *,
        others_live: bool,
    ) -> str | None:
        """Act on a broadcast answer other than a fee refusal (the caller handles those: step 6)."""
        if answer in (Answer.ACCEPTED, Answer.KNOWN):
            await self.to_confirming(row_id, expected, cand, report)
            return None
        if answer is Answer.INVALID:
            reason = detail or "rejected_invalid"
            if others_live:
                # This candidate can never confirm; another may still (it stays reserved through the others).
                async with self.engine.begin() as conn:
                    await mark_candidates(conn, row_id, "dead", ids=[cand.id])
                return await self.stays(row_id, expected, reason, report)
            return await self.fail(row_id, expected, reason, report)
        if answer is Answer.MISSING:
            return await self.stays(row_id, expected, "inputs_missing", report)
        if answer is Answer.FEE:
            return await self.stays(row_id, expected, "fee_too_low", report)
        if answer == UPSTREAM:
            return await self.stays(row_id, expected, "broadcast_" + (detail or "error"), report)
        return await self.stays(row_id, expected, "broadcast_refused", report)


__all__ = ["UPSTREAM", "SendStep"]
