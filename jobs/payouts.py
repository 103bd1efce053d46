"""Job body ``btc_pending_transaction_processing``: reconcile and pay the payout queue (SPEC §8, §9)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.factory import Clients
from icy_backend.domain.payouts import Checkpoint, PayoutProcessor, PayoutRunReport, queue_counts
from icy_backend.domain.wallet import payout_wallet
from icy_backend.metrics.business import swap_operation
from icy_backend.metrics.families import PAYOUT_DEFERRAL_REASONS, PAYOUT_FAILURE_REASONS, Metrics
from icy_backend.settings import Settings
from jobs.context import JobContext

log = logging.getLogger(__name__)

JOB_NAME = "btc_pending_transaction_processing"

# Failure classes that are a refusal of the row (never clears) rather than a fault.
_REJECTIONS = frozenset(PAYOUT_FAILURE_REASONS)


def make_payout_job(
    engine: AsyncEngine,
    clients: Clients,
    settings: Settings,
    metrics: Metrics,
    *,
    before_broadcast: Callable[[int], Awaitable[None]] | None = None,
    checkpoint: Checkpoint | None = None,
) -> Callable[[JobContext], Awaitable[None]]:
    """The job body. Without ``BTC_WALLET_WIF`` every run only refreshes the gauges and fails if rows are
    waiting (a queue nobody can pay must be visible)."""
    wallet = payout_wallet(settings)
    processor = (
        PayoutProcessor(
            engine,
            clients.esplora,
            clients.prices,
            settings,
            wallet,
            before_broadcast=before_broadcast,
            checkpoint=checkpoint,
        )
        if wallet is not None
        else None
    )

    async def run(ctx: JobContext) -> None:
        try:
            if processor is None:
                if (await queue_counts(engine)).waiting:
                    ctx.item_failed("wallet_not_configured")
                return

            def on_item(kind: str | None) -> None:
                if kind is None:
                    ctx.item_succeeded()
                    swap_operation(metrics, "payout", "success")
                else:
                    ctx.item_failed(kind)
                    swap_operation(metrics, "payout", "rejected" if kind in _REJECTIONS else "error")

            report = await processor.run(on_item)
            count_report(metrics, report)
            ctx.set_metadata("completed", len(report.completed))
            ctx.set_metadata("failed", len(report.failed))
            ctx.set_metadata("deferred", len(report.deferred))
            ctx.set_metadata("unconfirmed", len(report.unconfirmed))
        finally:
            await refresh_payout_gauges(engine, metrics)

    return run


def count_report(metrics: Metrics, report: PayoutRunReport) -> None:
    """The counters of SPEC §6 from one run's report (bounded label values only)."""
    for outcome in report.bumps:
        metrics.payout_fee_bumps.labels(outcome).inc()
    for reason in report.failed.values():
        metrics.payouts_failed.labels(reason if reason in PAYOUT_FAILURE_REASONS else "other").inc()
    for reason in report.deferred.values():
        metrics.payout_deferrals.labels(reason if reason in PAYOUT_DEFERRAL_REASONS else "upstream").inc()


async def refresh_payout_gauges(engine: AsyncEngine, metrics: Metrics) -> None:
    """Set the payout gauges from the database after a run, even a failed or cancelled one (shielded and
    bounded: a timed-out run is cancelled, and the gauges must still tell the truth)."""
    with anyio.move_on_after(5, shield=True):
        try:
            counts = await queue_counts(engine)
        except Exception:  # the run's own outcome matters more than the gauges
            log.warning("could not refresh the payout gauges", exc_info=True)
            return
        gauge = metrics.pending_transactions
        gauge.labels("btc_payout").set(counts.waiting)
        for status in ("broadcasting", "confirming", "held"):
            gauge.labels("btc_" + status).set(counts.by_status.get(status, 0))
        gauge.labels("btc_daily_limit").set(counts.deferred_daily_limit)
        metrics.payout_oldest_unconfirmed.set(counts.oldest_unconfirmed_seconds)


async def refresh_gauge(
    engine: AsyncEngine,
    set_value: Callable[[float], None],
    count: Callable[[AsyncEngine], Awaitable[int]],
) -> None:
    """Set one pending gauge from the database after a run (shielded and bounded, like the payout gauges)."""
    with anyio.move_on_after(5, shield=True):
        try:
            set_value(await count(engine))
        except Exception:  # the run's own outcome matters more than the gauge
            log.warning("could not refresh a pending-transactions gauge", exc_info=True)
