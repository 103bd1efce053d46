"""Swap indexer on nodes that disagree (SPEC §9 *Consistent reads*), per-event payouts and the holds decided at
creation (*Price outliers*), with ``simulate --replicas 2``-style simulators and real PostgreSQL. "Paid once" is
read on the Esplora simulator's payments list."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.domain.oracle import OracleIncomplete
from icy_backend.domain.swap_validation import PricingUnavailable
from icy_backend.sim.combined import Simulators
from icy_backend.sim.faults import Fault
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
from tests.icy_backend.domain.support import sim_env

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

SETTINGS = {"BLOCKCHAIN_LOG_CHUNK_BLOCKS": "10", "BLOCKCHAIN_CONFIRMATIONS": "1"}


def replicas() -> Simulators:
    sims = Simulators(replicas=2)
    sims.seed_demo()
    return sims


async def test_failover_to_a_lagging_node_never_moves_the_cursor_past_unread_blocks(engine: AsyncEngine) -> None:
    sims = replicas()
    assert sims.evm2 is not None
    async with sim_env(sims, **SETTINGS) as env:
        assert env.settings.base_rpc_endpoints[1].endswith("/evm2")
        run = swap_job(engine, env)
        await run()  # caught up with an empty contract
        sims.evm2.lag = 50
        sims.evm.faults.set(Fault(path="eth_getLogs", status=500))  # the primary refuses log queries
        emitted: dict[str, str] = {}
        for n in range(60):
            if n % 5 == 0:
                address = user(n)
                emitted[fair_swap(sims, address)] = address
            sims.evm.mine_block()
        await run()
        at = await cursor(engine)
        assert at is not None
        assert at <= sims.evm2.head - 1  # never past what the node that answered had (and had confirmed)
        stored = await swap_rows(engine)
        assert all(r["block_number"] <= at for r in stored)
        assert len(stored) == sum(1 for tx in emitted if (sims.evm.txs[tx].block_number or 0) <= at)
        assert 0 < len(stored) < len(emitted)  # it did scan on the lagging node, as far as that node could see
        # Recovery: every Swap emitted meanwhile is indexed exactly once, one payout each, paid once.
        sims.evm.faults.clear()
        sims.evm2.lag = 0
        await run()
        await run()
        assert await cursor(engine) == sims.evm.head - 1
        rows = await swap_rows(engine)
        assert sorted(r["transaction_hash"] for r in rows) == sorted(emitted)
        pays = await payout_rows(engine)
        assert sorted(p["swap_transaction_hash"] for p in pays) == sorted(emitted)
        assert all(p["status"] == "pending" for p in pays)
        await pay_out(engine, env, runs=8)
        for address in emitted.values():
            assert len(paid(sims, address)) == 1


async def test_an_unknown_transaction_on_a_lagging_node_is_retried_not_stored(engine: AsyncEngine) -> None:
    sims = replicas()
    assert sims.evm2 is not None
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        before = await cursor(engine)
        tx = fair_swap(sims, user(1))
        sims.evm.mine_empty(3)
        # Logs come from the primary; the sender lookup fails over to the replica that has not seen the tx.
        sims.evm2.lag = 10
        sims.evm.faults.set(Fault(path="eth_getTransactionByHash", status=500))
        await run()
        assert await swap_rows(engine) == []  # never a placeholder sender
        assert await payout_rows(engine) == []
        at = await cursor(engine)
        assert at is not None and before is not None
        assert at < sims.evm.txs[tx].block_number  # type: ignore[operator]
        sims.evm.faults.clear()
        sims.evm2.lag = 0
        await run()
        (row,) = await swap_rows(engine)
        assert row["transaction_hash"] == tx
        assert row["from_address"] == sims.holders[0]


async def test_two_swap_events_in_one_transaction_get_two_payouts_and_two_payments(engine: AsyncEngine) -> None:
    sims = replicas()
    address = user(2)
    tx = fair_swap(sims, address, count=2)  # identical logs: the event carries no nonce
    sims.evm.mine_empty(2)
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        await run()
        await run()
        rows = await swap_rows(engine)
        assert [(r["transaction_hash"], r["event_index"]) for r in rows] == [(tx, 0), (tx, 1)]
        pays = await payout_rows(engine)
        assert [(p["swap_transaction_hash"], p["swap_event_index"], p["status"]) for p in pays] == [
            (tx, 0, "pending"),
            (tx, 1, "pending"),
        ]
        await pay_out(engine, env)
        assert len(paid(sims, address)) == 2
        assert {p["value"] for p in paid(sims, address)} == {pays[0]["total"]}


async def test_a_swap_paying_three_times_its_value_is_held_as_price_outlier(engine: AsyncEngine) -> None:
    sims = replicas()
    fair, greedy = user(3), user(4)
    fair_swap(sims, fair)
    fair_swap(sims, greedy, times=3)  # a leaked signer key: the contract pays whatever was signed
    sims.evm.mine_empty(2)
    async with sim_env(sims, **SETTINGS) as env:
        await swap_job(engine, env)()
        statuses = {p["btc_address"]: (p["status"], p["hold_reason"]) for p in await payout_rows(engine)}
        assert statuses == {fair: ("pending", None), greedy: ("held", "price_outlier")}
        await pay_out(engine, env)
        assert len(paid(sims, fair)) == 1
        assert [p for p in sims.esplora.payments() if p["address"] == greedy] == []


async def test_a_payout_above_the_cap_is_held_over_limit(engine: AsyncEngine) -> None:
    sims = replicas()
    small, large = user(5), user(6)
    fair_swap(sims, small, icy=20 * ICY)
    fair_swap(sims, large, icy=200 * ICY)
    sims.evm.mine_empty(2)
    cap = sims.demo_btc_amount(100 * ICY)
    async with sim_env(sims, BTC_PAYOUT_MAX_SATS=str(cap), **SETTINGS) as env:
        await swap_job(engine, env)()
        statuses = {p["btc_address"]: (p["status"], p["hold_reason"]) for p in await payout_rows(engine)}
        assert statuses == {small: ("pending", None), large: ("held", "over_limit")}
        await pay_out(engine, env)
        assert len(paid(sims, small)) == 1
        assert [p for p in sims.esplora.payments() if p["address"] == large] == []


async def test_without_a_pricing_ratio_the_event_waits_for_the_next_pass(engine: AsyncEngine) -> None:
    sims = replicas()
    tx = fair_swap(sims, user(7))
    sims.evm.mine_empty(2)
    async with sim_env(sims, **SETTINGS) as env:

        async def incomplete() -> int:
            raise PricingUnavailable("oracle_incomplete")

        with pytest.raises(PricingUnavailable):
            await swap_job(engine, env, incomplete)()
        assert await swap_rows(engine) == []
        assert await payout_rows(engine) == []  # never pending at a price nobody checked
        at = await cursor(engine)
        assert at is None or at < (sims.evm.txs[tx].block_number or 0)
        await swap_job(engine, env)()
        assert [(p["swap_transaction_hash"], p["status"]) for p in await payout_rows(engine)] == [(tx, "pending")]


async def test_mochi_pay_down_from_the_start_the_swap_waits_then_gets_its_payout(engine: AsyncEngine) -> None:
    sims = replicas()
    tx = fair_swap(sims, user(8))
    sims.evm.mine_empty(2)
    sims.mochi.faults.set(Fault(path="*", status=503))
    async with sim_env(sims, **SETTINGS) as env:
        run = swap_job(engine, env)
        with pytest.raises(OracleIncomplete):
            await run()
        assert await swap_rows(engine) == []
        assert await payout_rows(engine) == []
        sims.mochi.faults.clear()
        await swap_job(engine, env)()  # a fresh oracle (the failed figure is not cached)
        assert [(p["swap_transaction_hash"], p["status"]) for p in await payout_rows(engine)] == [(tx, "pending")]


async def test_demo_swaps_of_the_simulator_are_never_price_outliers(engine: AsyncEngine) -> None:
    sims = replicas()
    for _ in range(24):
        sims.tick()
    async with sim_env(sims, **SETTINGS) as env:
        await swap_job(engine, env)()
        pays = await payout_rows(engine)
        assert len(pays) >= 5
        assert {p["status"] for p in pays} == {"pending"}
