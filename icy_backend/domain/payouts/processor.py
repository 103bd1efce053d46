"""The payout processor: one run reconciles every in-flight row, then tries every pending row once."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.domain.payouts.base import WAITING, PayoutRunReport, rows_log
from icy_backend.domain.payouts.claim import ClaimStep
from icy_backend.domain.payouts.store import IN_FLIGHT, ids_with_status, queue_counts
from icy_backend.domain.row_machine import SKIPPED, ItemHook


class PayoutProcessor(ClaimStep):
    """Processes the payout queue (SPEC §9 payouts). ``before_broadcast(row_id)`` and ``checkpoint(point,
    row_id)`` are test seams (a crash there must be recoverable)."""

    async def run(self, on_item: ItemHook | None = None) -> PayoutRunReport:
        """Reconcile every ``broadcasting``/``confirming`` row (before anything new is built), then try every
        ``pending`` row once, oldest first. Held rows are never touched."""
        report = PayoutRunReport()
        self.new_run()
        for statuses, step in ((IN_FLIGHT, self.reconcile), (("pending",), self.process)):
            for row_id in await ids_with_status(self.engine, statuses):
                outcome = await rows_log.guarded(row_id, step(row_id, report))
                if outcome not in (SKIPPED, WAITING) and on_item is not None:
                    on_item(outcome)
        return report


async def count_waiting(engine: AsyncEngine) -> int:
    """Payouts not yet taken by a node (pending, broadcasting)."""
    return (await queue_counts(engine)).waiting


__all__ = ["PayoutProcessor", "count_waiting"]
