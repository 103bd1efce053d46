"""Payouts per minute against the Esplora node simulator (in-process ASGI) with 100 pending rows, confirmations
included.

    .venv/bin/python -m bench.payouts               # PostgreSQL (private database), else SQLite
    .venv/bin/python -m bench.payouts --sqlite      # force SQLite (a temp file)
    .venv/bin/python -m bench.payouts --rows 200 --confirmations 2

Each row is claimed under the wallet lock, built and signed (BIP-143, off the event loop), stored with its
candidate as ``broadcasting``, broadcast (``confirming``); then blocks are mined (instantly: the simulator's
blocks cost nothing, so the figure is the service's own cost) and the following runs reconcile every row until
it is ``completed`` with ``BTC_PAYOUT_CONFIRMATIONS`` confirmations. The simulator verifies every signature and
mempool rule. Reports payouts/minute for the send pass and for the whole cycle to ``completed``, checks that every
recipient has exactly one confirmed payment, and records the run under bench/results/payouts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

import httpx
from embit import ec
from embit.networks import NETWORKS
from embit.script import p2wpkh
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.record import record
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


async def _bench(engine: AsyncEngine, rows: int, confirmations: int) -> dict[str, float]:
    await upgrade(engine)
    settings = Settings(
        _env_file=None,
        APP_ENV="test",
        BTC_NETWORK="testnet",
        BTC_WALLET_WIF=WIF,
        BTC_MAX_TX_FEE_USD="5",
        BTC_PAYOUT_CONFIRMATIONS=confirmations,
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
        sent_at = time.perf_counter()
        assert len(report.sent) == rows, report
        completed: list[int] = []
        runs = 1
        while len(completed) < rows and runs < 10 + confirmations:
            esplora_sim.mine()
            completed += (await processor.run()).completed
            runs += 1
        elapsed = time.perf_counter() - started
    paid = Counter(p["address"] for p in esplora_sim.payments() if p["status"] == "confirmed")
    assert len(completed) == rows, (len(completed), rows)
    assert all(paid[_recipient(n)] == 1 for n in range(rows)), "a recipient was not paid exactly once"
    return {
        "rows": rows,
        "confirmations": confirmations,
        "runs": runs,
        "send_pass_seconds": round(sent_at - started, 3),
        "total_seconds": round(elapsed, 3),
        "payouts_per_minute_sent": round(rows / (sent_at - started) * 60, 1),
        "payouts_per_minute_completed": round(rows / elapsed * 60, 1),
        "ms_per_payout_completed": round(elapsed / rows * 1000, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--confirmations", type=int, default=1)
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
        measured = await _bench(engine, args.rows, args.confirmations)
    finally:
        await engine.dispose()
        if name is not None:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    backend = "PostgreSQL" if name else "SQLite"
    results: dict[str, Any] = {"backend": backend, **measured}
    print(json.dumps(results, indent=2))
    path = record(
        "payouts",
        results,
        notes=(
            f"{args.rows} pending payouts, {backend}, in-process Esplora node simulator (signature and mempool "
            f"rules), BTC_PAYOUT_CONFIRMATIONS={args.confirmations}; blocks mined instantly between runs"
        ),
        headline=(
            f"payouts: {results['payouts_per_minute_completed']:.0f}/min to completed "
            f"({results['payouts_per_minute_sent']:.0f}/min sent; {args.rows} rows, {backend}, "
            f"{args.confirmations} confirmation(s))"
        ),
    )
    print(f"recorded {path}")


if __name__ == "__main__":
    asyncio.run(main())
