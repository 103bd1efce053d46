"""Payouts per minute against the Esplora simulator (in-process ASGI) with 100 pending rows.

    .venv/bin/python -m bench.payouts               # PostgreSQL (private database), else SQLite
    .venv/bin/python -m bench.payouts --sqlite      # force SQLite (a temp file)
    .venv/bin/python -m bench.payouts --rows 200

Each row is claimed under the wallet lock, built and signed (BIP-143, off the event loop), stored as
``broadcasting``, broadcast and marked ``completed``: the full safe path, one payout at a time by design. The
simulator verifies every signature. Reports payouts/minute for one run over the queue, and checks that every
recipient was paid exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections import Counter

import httpx
from embit import ec
from embit.networks import NETWORKS
from embit.script import p2wpkh
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from icy_backend.breakers import Breakers
from icy_backend.clients.esplora import EsploraClient
from icy_backend.clients.prices import PriceClient
from icy_backend.db.migrate import upgrade
from icy_backend.db.tables import onchain_btc_processed_transactions
from icy_backend.domain.payouts import PayoutProcessor
from icy_backend.domain.wallet import wallet_from_wif
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.settings import Settings
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.prices import PriceSim

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
WIF = ec.PrivateKey(hashlib.sha256(b"bench payout wallet").digest()).wif(NETWORKS["test"])


def _recipient(n: int) -> str:
    key = ec.PrivateKey(hashlib.sha256(b"bench recipient %d" % n).digest())
    return str(p2wpkh(key.get_public_key()).address(NETWORKS["test"]))


async def _admin(sql: str) -> None:
    engine = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def _bench(engine: AsyncEngine, rows: int) -> tuple[float, int]:
    await upgrade(engine)
    settings = Settings(
        _env_file=None, APP_ENV="test", BTC_NETWORK="testnet", BTC_WALLET_WIF=WIF, BTC_MAX_TX_FEE_USD="5"
    )
    metrics = Metrics(make_registry())
    breakers = Breakers(settings, metrics)
    esplora_sim, price_sim = EsploraSim("testnet"), PriceSim(60000.0)
    wallet = wallet_from_wif(WIF, "testnet")
    for _ in range(rows + 10):
        esplora_sim.fund(wallet.address, 1_000_000)
    async with engine.begin() as conn:
        await conn.execute(
            insert(onchain_btc_processed_transactions),
            [
                {
                    "swap_transaction_hash": "0x" + hashlib.sha256(b"bench %d" % n).hexdigest(),
                    "btc_address": _recipient(n),
                    "subtotal": 53_000 + n,
                    "service_fee": 3000,
                    "total": 50_000 + n,
                    "status": "pending",
                    "attempts": 0,
                }
                for n in range(rows)
            ],
        )
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=esplora_sim.app)) as e_http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=price_sim.app)) as p_http,
    ):
        processor = PayoutProcessor(
            engine,
            EsploraClient(e_http, ["http://esplora"], breakers, metrics),
            PriceClient(p_http, "http://coingecko", breakers, metrics),
            settings,
            wallet,
        )
        started = time.perf_counter()
        report = await processor.run()
        elapsed = time.perf_counter() - started
    paid = Counter(p["address"] for p in esplora_sim.payments())
    assert len(report.completed) == rows, report
    assert all(paid[_recipient(n)] == 1 for n in range(rows)), "a recipient was not paid exactly once"
    return elapsed, len(report.completed)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    name = None
    if not args.sqlite:
        name = f"icy_money_bench_{uuid.uuid4().hex[:8]}"
        try:
            await _admin(f'CREATE DATABASE "{name}"')
            url = re.sub(r"/[^/]*$", f"/{name}", ADMIN_URL)
        except Exception:
            name = None
    if name is None:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    engine = create_async_engine(url)
    try:
        elapsed, done = await _bench(engine, args.rows)
    finally:
        await engine.dispose()
        if name is not None:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    backend = "PostgreSQL" if name else "SQLite"
    print(f"{backend}: {done} payouts in {elapsed:.2f} s -> {done / elapsed * 60:.0f} payouts/minute")
    print(f"per payout: {elapsed / done * 1000:.1f} ms (claim+lock, utxos, build+sign, store, broadcast, complete)")


if __name__ == "__main__":
    asyncio.run(main())
