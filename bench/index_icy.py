"""Benchmark: index 10 000 ICY Transfer logs from the EVM simulator into PostgreSQL.

    .venv/bin/python bench/index_icy.py [--logs 10000] [--per-block 100] [--chunk 2000]

Creates a private database next to ``test`` (``TEST_DATABASE_URL``, default the local one), migrates it, runs
the real ``icy_transaction_indexing`` job body through the real clients (httpx ASGI transport to the simulator)
and prints the wall time and rows per second, then drops the database. Not a timed test: a number to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
import uuid

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from icy_backend.breakers import Breakers
from icy_backend.clients.factory import open_clients
from icy_backend.db.migrate import upgrade
from icy_backend.db.tables import onchain_icy_transactions
from icy_backend.metrics import Metrics, make_registry
from icy_backend.settings import load_settings
from icy_backend.sim.combined import Simulators
from jobs.context import JobContext
from jobs.indexers import make_icy_indexer

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def _admin(sql: str) -> None:
    engine = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def main(n_logs: int, per_block: int, chunk: int) -> None:
    sims = Simulators()
    sims.seed_demo()
    holders = sims.holders
    made = 0
    while made < n_logs:
        for _ in range(min(per_block, n_logs - made)):
            a, b = holders[made % len(holders)], holders[(made + 1) % len(holders)]
            sims.evm.transfer(a, b, 1)
            made += 1
        sims.evm.mine_block()
    sims.evm.mine_block()  # BLOCKCHAIN_CONFIRMATIONS=1 (the minimum): every transfer is one block deep
    sims.evm.set_log_range_limit(10**9)
    env = {k: v for k, v in sims.env_lines("http://sim").items() if k != "DEMO_LOCKED_TREASURY_ADDRESS"}
    env.update(
        {
            "APP_ENV": "test",
            "SANDBOX": "off",
            "BLOCKCHAIN_CONFIRMATIONS": "1",
            "BLOCKCHAIN_LOG_CHUNK_BLOCKS": str(chunk),
        }
    )
    settings = load_settings(env, env_file=None)
    name = f"icy_bench_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    engine = create_async_engine(re.sub(r"/[^/]*$", f"/{name}", ADMIN_URL))
    try:
        await upgrade(engine)
        metrics = Metrics(make_registry())
        transport = httpx.ASGITransport(app=sims.app)
        async with open_clients(
            settings, metrics, Breakers(settings, metrics), transport=transport, sim_base_url="http://sim"
        ) as clients:
            run = make_icy_indexer(engine, clients, settings, metrics)
            ctx = JobContext("icy_transaction_indexing")
            start = time.perf_counter()
            await run(ctx)
            elapsed = time.perf_counter() - start
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(onchain_icy_transactions))).scalar_one()
        blocks = sims.evm.head
        print(
            f"indexed {rows} ICY transfer rows ({made} benchmark logs + demo mints) over {blocks} blocks, "
            f"chunk {chunk} blocks, {ctx.metadata.get('chunks')} chunk(s): {elapsed:.2f} s, "
            f"{rows / elapsed:,.0f} rows/s"
        )
    finally:
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=10_000)
    parser.add_argument("--per-block", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.logs, args.per_block, args.chunk))
