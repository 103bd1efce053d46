"""Helpers for the indexer tests on messy chains: run the real job bodies, read rows, pay out, count payments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.tables import indexer_cursors
from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps
from icy_backend.domain.indexers import cursors
from icy_backend.domain.oracle import OracleService
from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.combined import Simulators
from jobs.context import JobContext
from jobs.indexers import make_swap_indexer
from jobs.payouts import make_payout_job
from tests.icy_backend.domain.support import SimEnv

ICY = 10**18


def user(n: int) -> str:
    return P2wpkhKey.from_seed(b"reorg user %d" % n, "test").address


def fair_swap(sims: Simulators, btc_address: str, *, icy: int = 100 * ICY, count: int = 1, times: int = 1) -> str:
    """A Swap (``count`` events in one transaction) priced at the service's own ratio x ``times``."""
    sats = sims.demo_btc_amount(icy)
    assert sats
    return sims.evm.emit_swap(icy, btc_address, sats * times, sims.holders[0], count=count)


def swap_job(engine: AsyncEngine, env: SimEnv, ratio: Callable[[], Awaitable[int]] | None = None) -> Any:
    """The real ``icy_swap_transaction_indexing`` body, priced like the app wires it: the oracle's complete-figures
    pricing ratio of a service configured from the env file."""
    if ratio is None:
        ratio = OracleService(env.settings, env.metrics, engine, env.clients).pricing_ratio
    body = make_swap_indexer(engine, env.clients, env.settings, env.metrics, ratio)

    async def run() -> JobContext:
        ctx = JobContext("icy_swap_transaction_indexing")
        await body(ctx)
        return ctx

    return run


async def swap_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        query = select(swaps).order_by(swaps.c.block_number, swaps.c.log_index)
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def payout_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(payouts).order_by(payouts.c.id))).mappings().all()]


async def cursor(engine: AsyncEngine, name: str = cursors.SWAP_CURSOR) -> int | None:
    async with engine.connect() as conn:
        query = select(indexer_cursors.c.block_number).where(indexer_cursors.c.name == name)
        value = (await conn.execute(query)).scalar()
    return None if value is None else int(value)


async def pay_out(engine: AsyncEngine, env: SimEnv, runs: int = 6) -> None:
    """Run the payout job a few times, mining a Bitcoin block after each run (broadcast, then confirm)."""
    job = make_payout_job(engine, env.clients, env.settings, env.metrics)
    for _ in range(runs):
        await job(JobContext("btc_pending_transaction_processing"))
        env.sims.esplora.mine()


def paid(sims: Simulators, address: str) -> list[dict[str, Any]]:
    """``confirmed`` entries of the simulator's payments list to ``address`` ("paid once" = exactly one)."""
    return [p for p in sims.esplora.payments() if p["address"] == address and p["status"] == "confirmed"]
