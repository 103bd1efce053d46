"""Job body ``swap_request_processing``: send the swap of every request whose ICY arrived (SPEC §8, §9)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.factory import Clients
from icy_backend.domain.oracle import OracleService
from icy_backend.domain.swap_requests import SwapRequestProcessor, count_waiting
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings
from jobs.context import JobContext
from jobs.payouts import refresh_gauge

JOB_NAME = "swap_request_processing"


def make_swap_request_job(
    engine: AsyncEngine,
    clients: Clients,
    settings: Settings,
    metrics: Metrics,
    oracle: OracleService,
) -> Callable[[JobContext], Awaitable[None]]:
    """The job body. Without the signer key or swap contract, a run only refreshes the pending gauge and
    fails when requests are waiting (nobody can process them)."""
    key = settings.BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY
    configured = bool(key and key.get_secret_value() and settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR)
    processor = SwapRequestProcessor(engine, clients.evm, oracle, settings) if configured else None
    gauge = metrics.pending_transactions.labels("swap_request")

    async def run(ctx: JobContext) -> None:
        try:
            if processor is None:
                if await count_waiting(engine):
                    ctx.item_failed("signer_not_configured")
                return

            def on_item(kind: str | None) -> None:
                if kind is None:
                    ctx.item_succeeded()
                else:
                    ctx.item_failed(kind)

            report = await processor.run(on_item)
            ctx.set_metadata("sent", len(report.sent))
            ctx.set_metadata("completed", len(report.completed))
            ctx.set_metadata("replaced", len(report.replaced))
            ctx.set_metadata("failed", len(report.failed))
            ctx.set_metadata("waiting_for_icy", len(report.waiting))
        finally:
            await refresh_gauge(engine, gauge.set, count_waiting)

    return run
