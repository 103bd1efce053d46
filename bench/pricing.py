"""What pricing from complete figures costs a signature request: the cached display ratio vs the pricing ratio.

    .venv/bin/python -m bench.pricing                   # PostgreSQL (a private database), ~20 s
    .venv/bin/python -m bench.pricing --owed 100 --settled 10000 --calls 2000

``OracleService.icy_btc_ratio()`` (what ``generate-signature`` read before) answers from the 5-minute cache.
``OracleService.pricing_ratio()`` (what it reads now) answers from the same caches plus one database query for
the payouts owed (``pending``/``held``/``broadcasting``, and any created since the treasury was read). Both are
timed in-process over the simulators (ASGI) with ``--owed`` owed and ``--settled`` completed payouts in the
table; interleaved rounds, medians of the per-call means. Writes ``bench/results/pricing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import httpx
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.payouts import ADMIN_URL, _admin
from bench.record import record
from icy_backend.breakers import Breakers
from icy_backend.clients.factory import open_clients
from icy_backend.db.migrate import upgrade
from icy_backend.db.tables import onchain_btc_processed_transactions
from icy_backend.domain.oracle import OracleService
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.settings import load_settings
from icy_backend.sim.combined import Simulators


async def _payouts(engine: AsyncEngine, owed: int, settled: int) -> None:
    rows = [
        {
            "swap_transaction_hash": "0x" + hashlib.sha256(b"bench pricing %d" % n).hexdigest(),
            "btc_address": "tb1qbench",
            "subtotal": 13_000,
            "service_fee": 3000,
            "total": 10_000,
            "status": "pending" if n < owed else "completed",
            "attempts": 0,
        }
        for n in range(owed + settled)
    ]
    async with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            await conn.execute(insert(onchain_btc_processed_transactions), rows[start : start + 2000])
        await conn.execute(text("ANALYZE onchain_btc_processed_transactions"))  # as autovacuum would


async def _mean_us(call: Callable[[], Awaitable[int]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


async def _concurrent_us(call: Callable[[], Coroutine[Any, Any, int]], calls: int, width: int = 50) -> float:
    """Mean wall time per call with ``width`` calls in flight at once (signature requests arriving together)."""
    started = time.perf_counter()
    for _ in range(max(calls // width, 1)):
        async with anyio.create_task_group() as tg:
            for _ in range(width):
                tg.start_soon(call)
    return (time.perf_counter() - started) / (max(calls // width, 1) * width) * 1e6


async def _bench(engine: AsyncEngine, owed: int, settled: int, calls: int, rounds: int) -> dict[str, float]:
    await upgrade(engine)
    await _payouts(engine, owed, settled)
    sims = Simulators(service_knows_locked_treasury=False)
    sims.seed_demo()
    env = {k: v for k, v in sims.env_lines("http://sim").items() if k != "DEMO_LOCKED_TREASURY_ADDRESS"}
    settings = load_settings({**env, "APP_ENV": "test", "SANDBOX": "off"}, env_file=None)
    metrics = Metrics(make_registry())
    transport = httpx.ASGITransport(app=sims.app)
    async with open_clients(
        settings, metrics, Breakers(settings, metrics), transport=transport, sim_base_url="http://sim"
    ) as clients:
        oracle = OracleService(settings, metrics, engine, clients)
        display, pricing = await oracle.icy_btc_ratio(), await oracle.pricing_ratio()  # warm both caches
        assert pricing > display, "owed payouts must lower the pricing treasury"
        cached: list[float] = []
        priced: list[float] = []
        concurrent: list[float] = []
        for _ in range(rounds):
            cached.append(await _mean_us(oracle.icy_btc_ratio, calls))
            priced.append(await _mean_us(oracle.pricing_ratio, calls))
            concurrent.append(await _concurrent_us(oracle.pricing_ratio, calls))
    c, p = statistics.median(cached), statistics.median(priced)
    return {
        "cached_ratio_us": round(c, 1),
        "pricing_ratio_us": round(p, 1),
        "added_us": round(p - c, 1),
        "pricing_ratio_50_concurrent_us_per_call": round(statistics.median(concurrent), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--owed", type=int, default=100)
    parser.add_argument("--settled", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = f"icy_pricing_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    engine = create_async_engine(re.sub(r"/[^/]*$", f"/{name}", ADMIN_URL))
    try:
        results = await _bench(engine, args.owed, args.settled, args.calls, args.rounds)
    finally:
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}"')
    headline = (
        f"pricing ratio {results['pricing_ratio_us']} µs/call vs cached display ratio {results['cached_ratio_us']} "
        f"µs/call (+{results['added_us']} µs: one PostgreSQL query, {args.owed} owed + {args.settled} settled"
        " payouts); "
        f"{results['pricing_ratio_50_concurrent_us_per_call']} µs/call with 50 in flight (one shared query)"
    )
    path = record(
        "pricing",
        {**results, "owed": args.owed, "settled": args.settled, "calls": args.calls, "rounds": args.rounds},
        notes="in-process, simulators over ASGI, PostgreSQL on 127.0.0.1; medians of per-round means",
        headline=headline,
    )
    print(headline)
    print(f"written to {path}")


if __name__ == "__main__":
    asyncio.run(main())
