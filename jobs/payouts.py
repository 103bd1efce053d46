"""Job body ``btc_pending_transaction_processing``: reconcile and pay the payout queue (SPEC §8, §9)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.factory import Clients
from icy_backend.domain.payouts import PayoutProcessor, count_waiting
from icy_backend.domain.wallet import payout_wallet
from icy_backend.metrics.business import swap_operation
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings
from jobs.context import JobContext

log = logging.getLogger(__name__)

JOB_NAME = "btc_pending_transaction_processing"

# Failure classes that are a refusal of the row (never clears) rather than a fault.
_REJECTIONS = frozenset({"invalid_address", "wrong_network", "below_dust", "rejected_invalid"})


def make_payout_job(
    engine: AsyncEngine,
    clients: Clients,
    settings: Settings,
    metrics: Metrics,
    *,
    before_broadcast: Callable[[int], Awaitable[None]] | None = None,
) -> Callable[[JobContext], Awaitable[None]]:
    """The job body. Without ``BTC_WALLET_WIF`` every run only refreshes the pending gauge and fails if rows
    are waiting (a queue nobody can pay must be visible)."""
    wallet = payout_wallet(settings)
    processor = (
        PayoutProcessor(engine, clients.esplora, clients.prices, settings, wallet, before_broadcast=before_broadcast)
        if wallet is not None
        else None
    )
    gauge = metrics.pending_transactions.labels("btc_payout")
    broadcasting_gauge = metrics.pending_transactions.labels("btc_broadcasting")

    async def run(ctx: JobContext) -> None:
        try:
            if processor is None:
                waiting = await count_waiting(engine)
                if waiting:
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
            ctx.set_metadata("completed", len(report.completed))
            ctx.set_metadata("failed", len(report.failed))
            ctx.set_metadata("deferred", len(report.deferred))
            ctx.set_metadata("unconfirmed", len(report.unconfirmed))
        finally:
            await refresh_gauge(engine, gauge.set)
            await refresh_gauge(engine, broadcasting_gauge.set, _count_broadcasting)

    return run


async def _count_broadcasting(engine: AsyncEngine) -> int:
    return await count_waiting(engine, ("broadcasting",))


async def refresh_gauge(
    engine: AsyncEngine,
    set_value: Callable[[float], None],
    count: Callable[[AsyncEngine], Awaitable[int]] = count_waiting,
) -> None:
    """Set the pending gauge from the database after a run, even a failed or cancelled one (shielded and
    bounded: a timed-out run is cancelled, and the gauge must still tell the truth)."""
    with anyio.move_on_after(5, shield=True):
        try:
            set_value(await count(engine))
        except Exception:  # the run's own outcome matters more than the gauge
            log.warning("could not refresh a pending-transactions gauge", exc_info=True)
