"""Job bodies of the three indexers (SPEC §8, §9): ``btc_transaction_indexing``, ``icy_transaction_indexing``,
``icy_swap_transaction_indexing``. Each factory returns ``async def run(ctx: JobContext) -> None``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from eth_account import Account
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import NotConfigured
from icy_backend.clients.factory import Clients
from icy_backend.domain.indexers.btc import BtcIndexer
from icy_backend.domain.indexers.icy import IcyTransferIndexer
from icy_backend.domain.indexers.swap import SwapIndexer
from icy_backend.domain.indexers.swap_payouts import PricingRatio
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings
from jobs.context import JobContext

log = logging.getLogger(__name__)

JobBody = Callable[[JobContext], Awaitable[None]]


def signer_address(settings: Settings) -> str | None:
    """The swap signer wallet's address (it receives the ICY of swap requests), or None."""
    key = settings.BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY
    if key is None or not key.get_secret_value():
        return None
    try:
        return str(Account.from_key(key.get_secret_value()).address)
    except Exception:  # a bad key is reported by the signer's own startup check; never echo it here
        log.warning("swap signer key is not a valid private key: ICY transfers to it are typed 'transfer'")
        return None


def make_btc_indexer(engine: AsyncEngine, clients: Clients, settings: Settings, metrics: Metrics) -> JobBody:
    async def run(ctx: JobContext) -> None:
        treasury = settings.BLOCKCHAIN_BTC_TREASURY_ADDRESS
        if not treasury:
            raise NotConfigured("blockstream_api", "BLOCKCHAIN_BTC_TREASURY_ADDRESS")
        await BtcIndexer(engine, clients.esplora, treasury, metrics).run(ctx.heartbeat, ctx)

    return run


def make_icy_indexer(engine: AsyncEngine, clients: Clients, settings: Settings, metrics: Metrics) -> JobBody:
    own = [a for a in (settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR, signer_address(settings)) if a]
    indexer = IcyTransferIndexer(engine, clients.evm, settings, metrics, own)

    async def run(ctx: JobContext) -> None:
        await indexer.run(ctx.heartbeat, ctx)

    return run


def make_swap_indexer(
    engine: AsyncEngine, clients: Clients, settings: Settings, metrics: Metrics, ratio: PricingRatio
) -> JobBody:
    """``ratio``: the pricing ratio (ICY per BTC x 10^8) the price-outlier hold compares Swap events with."""
    indexer = SwapIndexer(engine, clients.evm, settings, metrics, ratio)

    async def run(ctx: JobContext) -> None:
        await indexer.run(ctx.heartbeat, ctx)

    return run


def make_indexer_jobs(
    engine: AsyncEngine, clients: Clients, settings: Settings, metrics: Metrics, ratio: PricingRatio
) -> dict[str, JobBody]:
    """The three bodies by job name, for ``jobs.definitions.build_job_definitions``."""
    return {
        "btc_transaction_indexing": make_btc_indexer(engine, clients, settings, metrics),
        "icy_transaction_indexing": make_icy_indexer(engine, clients, settings, metrics),
        "icy_swap_transaction_indexing": make_swap_indexer(engine, clients, settings, metrics, ratio),
    }


__all__ = ["make_btc_indexer", "make_icy_indexer", "make_indexer_jobs", "make_swap_indexer", "signer_address"]
