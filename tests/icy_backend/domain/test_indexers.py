"""The three indexers against the simulators and real PostgreSQL."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.tables import indexer_cursors
from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_btc_transactions as btc_rows
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps
from icy_backend.db.tables import onchain_icy_transactions as icy_rows
from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.combined import Simulators
from jobs.context import JobContext
from jobs.indexers import make_btc_indexer, make_icy_indexer, make_swap_indexer
from tests.icy_backend.domain.support import metric, sim_env

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

ICY = 10**18


async def cheap_icy() -> int:
    """A pricing ratio at which none of these swaps is a price outlier (1 ICY per BTC x 10^-8)."""
    return 1


async def _rows(engine: AsyncEngine, table: Any, *order: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(select(table).order_by(*order))]


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _drop_cursors(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(indexer_cursors))


# ---- BTC ---------------------------------------------------------------------------------------------------


async def test_btc_history_over_several_pages_and_rerun(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()  # 5 confirmed fundings
    treasury = sims.btc_wallet.address
    other = P2wpkhKey.from_seed(b"payee", "test").address
    for n in range(70):
        sims.esplora.fund(treasury, 10_000 + n)
    # Two payouts from the treasury, each with change back to it.
    for value in (10_000, 10_001):
        utxo = next(u for u in sims.esplora.utxos_json(treasury) if u["value"] == value)
        raw = sims.btc_wallet.sign_spend(
            [(utxo["txid"], utxo["vout"], value)], [(other, 6000), (treasury, value - 6500)]
        )
        sims.esplora.broadcast(raw)
        sims.esplora.mine()
    sims.esplora.fund(treasury, 999, confirmed=False)  # unconfirmed: not indexed yet
    async with sim_env(sims) as env:
        run = make_btc_indexer(engine, env.clients, env.settings, env.metrics)
        ctx = JobContext("btc_transaction_indexing")
        env.counter.reset()
        await run(ctx)
        assert env.counter.counts["/esplora"] >= 4  # 77 confirmed txs: 4 pages of 25
        rows = await _rows(engine, btc_rows, btc_rows.c.id)
        ins = [r for r in rows if r["type"] == "in"]
        outs = [r for r in rows if r["type"] == "out"]
        assert len(ins) == 75
        assert len(outs) == 2
        assert {r["other_address"] for r in outs} == {other}
        assert all(r["amount"] == 6000 and r["fee"] == 500 for r in outs)
        assert all(r["block_time"] and r["block_height"] for r in rows)
        # Change outputs are not income: in - out - fees is the confirmed balance.
        stats = sims.esplora.address_json(treasury)["chain_stats"]
        balance = stats["funded_txo_sum"] - stats["spent_txo_sum"]
        assert sum(r["amount"] for r in ins) - sum(r["amount"] + r["fee"] for r in outs) == balance
        assert metric(env.metrics, "icy_backend_indexed_transactions_total", {"chain": "btc"}) == 77
        assert ctx.metadata["rows_inserted"] == 77

        # A re-run inserts nothing and stops at the first page.
        env.counter.reset()
        await run(JobContext("btc_transaction_indexing"))
        assert await _count(engine, btc_rows) == 77
        assert env.counter.counts["/esplora"] == 1
        # New history: only the new rows, including the now-confirmed funding.
        sims.esplora.mine()
        sims.esplora.fund(treasury, 12_345)
        await run(JobContext("btc_transaction_indexing"))
        assert await _count(engine, btc_rows) == 79
        # Lost cursor: a full re-walk is harmless.
        await _drop_cursors(engine)
        await run(JobContext("btc_transaction_indexing"))
        assert await _count(engine, btc_rows) == 79


# ---- ICY transfers -----------------------------------------------------------------------------------------


def _transfers_at(sims: Simulators, blocks: set[int], until: int) -> None:
    """Mine up to block ``until``, with one holder-to-holder transfer in each block of ``blocks``."""
    a, b = sims.holders[0], sims.holders[1]
    while sims.evm.head < until:
        if sims.evm.head + 1 in blocks:
            sims.evm.transfer(a, b, ICY)
        sims.evm.mine_block()


def _assert_contiguous(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    assert ranges[0][0] == start
    assert ranges[-1][1] == end
    for (_, prev_end), (nxt_start, _) in itertools.pairwise(ranges):
        assert nxt_start == prev_end + 1  # fix: the old ranges shared a block


async def test_icy_chunks_do_not_overlap_and_boundary_log_indexed_once(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()  # mints in block 1 (the initial ICY tx), head 6
    _transfers_at(sims, {10, 11, 15, 20, 23}, 30)
    sims.evm.transfer(sims.holders[2], sims.signer_address, 5 * ICY)  # into the signer: "in"
    sims.evm.mine_block()  # block 31
    sims.evm.mine_empty(3)  # head 34, confirmations 3 -> index up to 31
    async with sim_env(sims, BLOCKCHAIN_LOG_CHUNK_BLOCKS="5", BLOCKCHAIN_CONFIRMATIONS="3") as env:
        run = make_icy_indexer(engine, env.clients, env.settings, env.metrics)
        env.counter.reset()
        await run(JobContext("icy_transaction_indexing"))
        ranges = env.counter.log_ranges()
        _assert_contiguous(ranges, 1, 31)
        assert all(e - s + 1 == 5 for s, e in ranges[:-1])
        rows = await _rows(engine, icy_rows, icy_rows.c.block_number, icy_rows.c.log_index)
        # 7 mints in block 1, one transfer in each of 10, 11 (ranges [6,10] and [11,15] meet there), 15, 20,
        # 23, and the signer deposit in 31.
        assert len(rows) == 7 + 5 + 1
        assert [r["block_number"] for r in rows[7:]] == [10, 11, 15, 20, 23, 31]
        assert len({(r["transaction_hash"], r["log_index"]) for r in rows}) == len(rows)
        deposit = rows[-1]
        assert deposit["type"] == "in"
        assert deposit["to_address"] == sims.signer_address
        assert deposit["amount"] == 5 * ICY
        assert deposit["block_time"] == sims.evm.blocks[31].timestamp
        assert rows[8]["type"] == "transfer"
        assert metric(env.metrics, "icy_backend_indexed_transactions_total", {"chain": "icy"}) == 13
        async with engine.connect() as conn:
            cursor = (await conn.execute(select(indexer_cursors.c.block_number))).scalar_one()
        assert cursor == 31

        # Next run continues at 32 and stops at head - 3.
        _transfers_at(sims, {36}, 40)
        env.counter.reset()
        await run(JobContext("icy_transaction_indexing"))
        _assert_contiguous(env.counter.log_ranges(), 32, 37)
        assert await _count(engine, icy_rows) == 14

        # Re-scan from the start: nothing new.
        await _drop_cursors(engine)
        await run(JobContext("icy_transaction_indexing"))
        assert await _count(engine, icy_rows) == 14
        assert metric(env.metrics, "icy_backend_indexed_transactions_total", {"chain": "icy"}) == 14


async def test_icy_range_limit_halves_the_chunk(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()
    _transfers_at(sims, {7, 8, 9, 12, 19}, 24)  # scanned up to 23 with one confirmation
    sims.evm.set_log_range_limit(3)
    async with sim_env(sims, BLOCKCHAIN_LOG_CHUNK_BLOCKS="8", BLOCKCHAIN_CONFIRMATIONS="1") as env:
        run = make_icy_indexer(engine, env.clients, env.settings, env.metrics)
        env.counter.reset()
        ctx = JobContext("icy_transaction_indexing")
        await run(ctx)
        ranges = env.counter.log_ranges()
        accepted = [r for r in ranges if r[1] - r[0] + 1 <= 3]
        assert ranges[:2] == [(1, 8), (1, 4)]  # 8 refused, 4 refused, then 2 at a time
        _assert_contiguous(accepted, 1, 23)
        assert all(e - s + 1 == 2 for s, e in accepted[:-1])
        assert await _count(engine, icy_rows) == 7 + 5
        assert ctx.metadata["cursor_block"] == 23


async def test_icy_start_block_from_initial_transaction(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()
    _transfers_at(sims, {8}, 9)
    later = sims.evm.transfer(sims.holders[0], sims.holders[3], ICY)
    sims.evm.mine_block()  # block 10
    _transfers_at(sims, {12}, 15)  # scanned up to 14 with one confirmation
    async with sim_env(sims, BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH=later, BLOCKCHAIN_CONFIRMATIONS="1") as env:
        await make_icy_indexer(engine, env.clients, env.settings, env.metrics)(JobContext("icy"))
        rows = await _rows(engine, icy_rows, icy_rows.c.block_number)
        assert [r["block_number"] for r in rows] == [10, 12]  # inclusive start, nothing before


# ---- Swap events -------------------------------------------------------------------------------------------


async def test_swaps_create_payouts_across_chunks_with_integer_fees(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()  # initial swap block = 1
    user = P2wpkhKey.from_seed(b"swapper", "test").address
    legacy = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"  # testnet P2PKH: dust 546
    holder = sims.holders[0]
    plan = {
        8: (100 * ICY, user, 1_000_000),  # fee = 1 % = 10 000
        9: (10 * ICY, user, 123_457),  # fee = 1 234.57 floored... below the 3 000 minimum -> 3 000
        10: (2 * ICY, legacy, 3_500),  # total 500 < 546 -> failed below_dust
        11: (2 * ICY, user, 3_300),  # total 300 >= 294 (P2WPKH dust) -> pending
        15: (2 * ICY, "bc1qnotanaddress", 50_000),  # mainnet / invalid on testnet -> failed
    }
    while sims.evm.head < 17:  # scanned up to 16 with one confirmation
        nxt = sims.evm.head + 1
        if nxt in plan:
            icy, btc, sats = plan[nxt]
            sims.evm.emit_swap(icy, btc, sats, holder)
        sims.evm.mine_block()
    async with sim_env(sims, BLOCKCHAIN_LOG_CHUNK_BLOCKS="5", BLOCKCHAIN_CONFIRMATIONS="1") as env:
        run = make_swap_indexer(engine, env.clients, env.settings, env.metrics, cheap_icy)
        env.counter.reset()
        ctx = JobContext("icy_swap_transaction_indexing")
        await run(ctx)
        _assert_contiguous(env.counter.log_ranges(), 1, 16)
        swap_rows = await _rows(engine, swaps, swaps.c.block_number)
        assert [r["block_number"] for r in swap_rows] == [8, 9, 10, 11, 15]  # 10|11 is a chunk boundary
        assert all(r["from_address"] == holder for r in swap_rows)
        assert swap_rows[0]["icy_amount"] == 100 * ICY
        by_hash = {r["transaction_hash"]: r["block_number"] for r in swap_rows}
        pays = {by_hash[p["swap_transaction_hash"]]: p for p in await _rows(engine, payouts, payouts.c.id)}
        expect = {
            8: (1_000_000, 10_000, 990_000, "pending", None),
            9: (123_457, 3_000, 120_457, "pending", None),
            10: (3_500, 3_000, 500, "failed", "below_dust"),
            11: (3_300, 3_000, 300, "pending", None),
            15: (50_000, 3_000, 47_000, "failed", "invalid_address"),
        }
        for block, (sub, fee, total, status, reason) in expect.items():
            p = pays[block]
            assert (p["subtotal"], p["service_fee"], p["total"], p["status"], p["failure_reason"]) == (
                sub,
                fee,
                total,
                status,
                reason,
            ), block
        assert metric(env.metrics, "icy_backend_indexed_transactions_total", {"chain": "icy_swap"}) == 5
        assert ctx.metadata["payouts_created"] == 5

        # Re-scan: nothing inserted, no second payout.
        await _drop_cursors(engine)
        await run(JobContext("icy_swap_transaction_indexing"))
        assert await _count(engine, swaps) == 5
        assert await _count(engine, payouts) == 5


async def test_swap_indexer_honours_range_limit_and_confirmations(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()
    user = P2wpkhKey.from_seed(b"swapper", "test").address
    for _ in range(12):
        sims.evm.emit_swap(2 * ICY, user, 60_000, sims.holders[1])
        sims.evm.mine_block()
    head = sims.evm.head
    sims.evm.set_log_range_limit(4)
    async with sim_env(sims, BLOCKCHAIN_LOG_CHUNK_BLOCKS="10", BLOCKCHAIN_CONFIRMATIONS="3") as env:
        env.counter.reset()
        await make_swap_indexer(engine, env.clients, env.settings, env.metrics, cheap_icy)(JobContext("swap"))
        accepted = [r for r in env.counter.log_ranges() if r[1] - r[0] + 1 <= 4]
        _assert_contiguous(accepted, 1, head - 3)
        assert await _count(engine, payouts) == 12 - 3
