"""EVM indexers across reorgs (SPEC §9 *Reorgs*), on the simulator's reorg control and real PostgreSQL.

``BLOCKCHAIN_CONFIRMATIONS=1`` keeps the head block out of the scan, so a simulator reorg of ``depth + 1`` blocks
replaces the last ``depth`` *indexed* blocks. "Paid once" is read on the Esplora simulator's payments list.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.tables import indexer_checkpoints
from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_transactions as icy_rows
from icy_backend.domain.indexers import cursors
from icy_backend.domain.indexers.logscan import ReorgTooDeep
from icy_backend.domain.oracle import OracleService
from icy_backend.domain.swap_validation import PricingUnavailable
from icy_backend.sim.combined import Simulators
from jobs.context import JobContext
from jobs.indexers import make_icy_indexer
from tests.icy_backend.domain.indexer_support import (
    ICY,
    cursor,
    fair_swap,
    paid,
    pay_out,
    payout_rows,
    swap_job,
    swap_rows,
    user,
)
from tests.icy_backend.domain.support import metric, sim_env

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

SETTINGS = {"BLOCKCHAIN_LOG_CHUNK_BLOCKS": "5", "BLOCKCHAIN_CONFIRMATIONS": "1"}


def three_swaps() -> tuple[Simulators, list[str], list[str]]:
    """Seeded simulators with one fair swap in each of the last three indexable blocks."""
    sims = Simulators()
    sims.seed_demo()
    sims.evm.mine_empty(4)
    users = [user(n) for n in range(3)]
    hashes = []
    for address in users:
        hashes.append(fair_swap(sims, address))
        sims.evm.mine_block()
    sims.evm.mine_block()  # the unindexed head (BLOCKCHAIN_CONFIRMATIONS=1)
    return sims, users, hashes


def reorgs(env_metrics: object, chain: str = "icy_swap") -> float:
    return metric(env_metrics, "icy_backend_indexer_reorgs_total", {"chain": chain})  # type: ignore[arg-type]


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_reorg_with_reinclusion_keeps_one_row_and_one_payout_per_event(engine: AsyncEngine, depth: int) -> None:
    sims, users, hashes = three_swaps()
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        assert len(await swap_rows(engine)) == 3
        sims.evm.reorg(depth + 1, reinclude=True)
        await run()
        await run()
        rows = await swap_rows(engine)
        assert [(r["transaction_hash"], r["event_index"]) for r in rows] == [(h, 0) for h in hashes]
        for row in rows:  # every row carries the hash of its block on the new chain
            assert row["block_hash"] == sims.evm.blocks[row["block_number"]].hash
        pays = await payout_rows(engine)
        assert sorted((p["swap_transaction_hash"], p["swap_event_index"]) for p in pays) == sorted(
            (h, 0) for h in hashes
        )
        assert all(p["status"] == "pending" and not p["reorged"] for p in pays)
        assert reorgs(env.metrics) == 1
        assert await cursor(engine) == sims.evm.head - 1
        await pay_out(engine, env)
        for address in users:
            assert len(paid(sims, address)) == 1


@pytest.mark.parametrize("depth", [1, 3])
async def test_reorg_without_reinclusion_removes_rows_and_unsent_payouts(engine: AsyncEngine, depth: int) -> None:
    sims, users, hashes = three_swaps()
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        sims.evm.reorg(depth + 1, reinclude=False)
        await run()
        kept = hashes[: 3 - depth]
        assert [r["transaction_hash"] for r in await swap_rows(engine)] == kept
        assert [p["swap_transaction_hash"] for p in await payout_rows(engine)] == kept
        assert reorgs(env.metrics) == 1
        await pay_out(engine, env)
        for address in users[: 3 - depth]:
            assert len(paid(sims, address)) == 1
        for address in users[3 - depth :]:
            assert paid(sims, address) == []
            assert [p for p in sims.esplora.payments() if p["address"] == address] == []


async def test_removed_logs_are_never_stored(engine: AsyncEngine) -> None:
    sims, _, hashes = three_swaps()
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        # The node keeps answering the vanished events' logs, marked removed, while the reorg propagates.
        sims.evm.reorg(3, reinclude=False, report_removed=True)
        await run()
        assert [r["transaction_hash"] for r in await swap_rows(engine)] == hashes[:1]
        assert len(await payout_rows(engine)) == 1
        assert await cursor(engine) == sims.evm.head - 1  # the pass completed, past the removed logs' blocks


async def test_payout_sent_before_a_reorg_is_flagged_then_reattached_never_duplicated(engine: AsyncEngine) -> None:
    sims, users, hashes = three_swaps()
    async with sim_env(sims, **SETTINGS) as env:
        oracle = OracleService(env.settings, env.metrics, engine, env.clients)
        pricing = {"up": True}

        async def ratio() -> int:
            if not pricing["up"]:
                raise PricingUnavailable("oracle_incomplete")
            return await oracle.icy_btc_ratio()

        run = swap_job(engine, env, ratio)
        await run()
        await pay_out(engine, env, runs=1)  # broadcast: a candidate may be out there
        sent = {p["swap_transaction_hash"]: p for p in await payout_rows(engine)}
        assert {p["status"] for p in sent.values()} <= {"broadcasting", "confirming", "completed"}
        old_block = {r["transaction_hash"]: r["block_number"] for r in await swap_rows(engine)}[hashes[2]]
        sims.evm.reorg(2, reinclude=True)
        # The pass rolls back, then cannot price the re-scanned chunk: the event is gone for now, its payout stays.
        pricing["up"] = False
        with pytest.raises(PricingUnavailable):
            await run()
        # Rolled back to the newest canonical checkpoint (a chunk end below the three swap blocks): their rows are
        # gone, their payouts stay (something may have been sent), flagged with the fork point.
        assert await swap_rows(engine) == []
        pays = await payout_rows(engine)
        assert [p["id"] for p in pays] == [sent[h]["id"] for h in hashes]
        assert all(p["reorged"] is True for p in pays)
        assert all(p["reorged_at_block"] is not None and p["reorged_at_block"] < old_block for p in pays)
        # The same event re-appears (same tx hash, event index 0): it re-attaches, no second payout.
        pricing["up"] = True
        await run()
        pays = await payout_rows(engine)
        assert len(pays) == 3
        assert [p["id"] for p in pays] == [sent[h]["id"] for h in hashes]
        assert all(p["reorged"] is False and p["reorged_at_block"] is None for p in pays)
        await pay_out(engine, env)
        for address in users:
            assert len(paid(sims, address)) == 1


async def test_reorged_payout_not_reattached_within_the_limit_pages(engine: AsyncEngine) -> None:
    sims, _, hashes = three_swaps()
    async with sim_env(sims, BLOCKCHAIN_REORG_DEPTH_MAX="4", **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        await pay_out(engine, env, runs=1)
        sims.evm.reorg(2, reinclude=False)
        await run()
        assert metric(env.metrics, "icy_backend_payouts_reorged_unattached") == 0
        sims.evm.mine_empty(5)
        await run()
        assert metric(env.metrics, "icy_backend_payouts_reorged_unattached") == 1
        async with engine.begin() as conn:  # a person settled it
            await conn.execute(
                update(payouts).where(payouts.c.swap_transaction_hash == hashes[2]).values(reorged=False)
            )
        await run()
        assert metric(env.metrics, "icy_backend_payouts_reorged_unattached") == 0


async def test_reorg_deeper_than_the_limit_stops_the_indexer(engine: AsyncEngine) -> None:
    sims, _, _ = three_swaps()
    sims.evm.mine_empty(6)
    async with sim_env(
        sims, BLOCKCHAIN_REORG_DEPTH_MAX="3", BLOCKCHAIN_LOG_CHUNK_BLOCKS="1", BLOCKCHAIN_CONFIRMATIONS="1"
    ) as env:
        run = swap_job(engine, env)
        await run()
        before = await swap_rows(engine)
        at = await cursor(engine)
        assert at is not None
        async with engine.connect() as conn:  # one checkpoint per 1-block chunk, pruned to the limit plus one
            kept = [int(n) for (n,) in (await conn.execute(select(indexer_checkpoints.c.block_number))).all()]
        assert sorted(kept) == list(range(at - 4, at + 1))
        sims.evm.reorg(9, reinclude=True)  # 8 indexed blocks replaced, the swaps among them
        for _ in range(2):  # every run fails: a person decides
            with pytest.raises(ReorgTooDeep):
                await run()
        assert metric(env.metrics, "icy_backend_indexer_reorg_too_deep", {"chain": "icy_swap"}) == 1
        assert await swap_rows(engine) == before  # nothing guessed, nothing deleted
        assert await cursor(engine) == at
        assert reorgs(env.metrics) == 0


async def test_icy_transfers_follow_a_reorg(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()
    a, b = sims.holders[0], sims.holders[1]
    transfers = []
    for _ in range(3):
        transfers.append(sims.evm.transfer(a, b, ICY))
        sims.evm.mine_block()
    sims.evm.mine_block()
    async with sim_env(sims, **SETTINGS) as env:
        body = make_icy_indexer(engine, env.clients, env.settings, env.metrics)
        await body(JobContext("icy_transaction_indexing"))
        sims.evm.reorg(3, reinclude=True)
        await body(JobContext("icy_transaction_indexing"))
        async with engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(select(icy_rows))).mappings().all()]
        moved = [r for r in rows if r["transaction_hash"] in transfers]
        assert sorted(r["transaction_hash"] for r in moved) == sorted(transfers)  # once each
        for row in rows:
            assert row["block_hash"] == sims.evm.blocks[row["block_number"]].hash
        assert reorgs(env.metrics, "icy") == 1
        assert await cursor(engine, cursors.ICY_CURSOR) == sims.evm.head - 1


async def test_held_and_failed_payouts_of_vanished_events_go_with_them(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()
    sims.evm.mine_empty(4)
    fair_swap(sims, user(10), times=3)  # held: price_outlier
    sims.evm.emit_swap(ICY, user(11), 3_100, sims.holders[0])  # failed: below_dust (total 100 sats)
    sims.evm.mine_block()
    sims.evm.mine_block()
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        assert sorted((p["status"], p["hold_reason"] or p["failure_reason"]) for p in await payout_rows(engine)) == [
            ("failed", "below_dust"),
            ("held", "price_outlier"),
        ]
        sims.evm.reorg(2, reinclude=False)
        await run()
        assert await swap_rows(engine) == []
        assert await payout_rows(engine) == []  # nothing was ever sent for them: nothing to flag or page
        assert metric(env.metrics, "icy_backend_payouts_reorged_unattached") == 0


async def test_a_node_behind_the_cursor_is_not_a_reorg(engine: AsyncEngine) -> None:
    sims, _, hashes = three_swaps()
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        at = await cursor(engine)
        later = fair_swap(sims, user(12))
        sims.evm.mine_empty(3)
        sims.evm.node.lag = 8  # the only node restarted from an older snapshot: the cursor's block is unknown to it
        ctx = await run()
        assert await cursor(engine) == at
        assert reorgs(env.metrics) == 0
        assert len(await swap_rows(engine)) == 3
        assert ctx.items_failed == 0  # waiting is not a failure
        sims.evm.node.lag = 0
        await run()
        assert [r["transaction_hash"] for r in await swap_rows(engine)] == [*hashes, later]
        assert reorgs(env.metrics) == 0
