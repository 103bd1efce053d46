"""Payouts against the Esplora simulator and real PostgreSQL: each row is paid exactly once, whatever happens."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from icy_backend.breakers import Breakers
from icy_backend.db.migrate import upgrade
from icy_backend.domain.btc_address import parse_address
from icy_backend.domain.btc_tx import CHANGE_DUST, Utxo, build_payout
from icy_backend.domain.payouts import PayoutProcessor
from icy_backend.domain.wallet import wallet_from_wif
from icy_backend.sim.faults import Fault
from tests.icy_backend.money.conftest import (
    WIF,
    BtcWorld,
    add_payout,
    make_settings,
    payout_candidates,
    payout_row,
    recipient,
)

pytestmark = pytest.mark.anyio


def processor(world: BtcWorld, engine: AsyncEngine, **kw: object) -> PayoutProcessor:
    return PayoutProcessor(
        engine,
        world.esplora(),
        world.prices(),
        world.settings,
        wallet_from_wif(WIF, "testnet"),
        **kw,  # type: ignore[arg-type]
    )


async def test_happy_path_pays_each_row_once(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000, 1_000_000, 1_000_000, 1_000_000)
    ids = [await add_payout(engine, n, recipient(n), 50_000 + n) for n in range(3)]
    proc = processor(world, engine)
    report = await proc.run()
    assert report.completed == []  # accepted by the mempool is not paid
    assert sorted(report.sent) == ids
    world.mine()
    report = await proc.run()
    assert sorted(report.completed) == ids
    for n, row_id in enumerate(ids):
        row = await payout_row(engine, row_id)
        assert row["status"] == "completed"
        assert row["processed_at"] is not None
        assert row["network_fee"] > 0
        assert row["confirmations"] == 1
        paid = world.confirmed_to(recipient(n))
        assert [(p["txid"], p["value"]) for p in paid] == [(row["btc_transaction_hash"], 50_000 + n)]
    world.mine()
    again = await proc.run()
    assert again.completed == []
    assert len(world.esplora_sim.payments()) == 3  # change goes back to the wallet and is no payment


async def test_broadcast_timeout_is_reconciled_without_second_payment(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000, 1_000_000)
    row_id = await add_payout(engine, 1, recipient(1), 70_000)
    world.esplora_sim.faults.set(Fault(path="/tx", hang_after=True))  # accepted, answer never comes
    proc = processor(world, engine)
    first = await proc.run()
    assert row_id in first.unconfirmed
    row = await payout_row(engine, row_id)
    assert row["status"] == "broadcasting"
    assert len(world.paid_to(recipient(1))) == 1  # the node has it
    world.esplora_sim.faults.clear()
    await proc.run()
    assert (await payout_row(engine, row_id))["status"] == "confirming"
    world.mine()
    second = await proc.run()
    assert second.completed == [row_id]
    final = await payout_row(engine, row_id)
    assert final["status"] == "completed"
    assert final["btc_transaction_hash"] == row["btc_transaction_hash"]
    assert len(world.paid_to(recipient(1))) == 1
    assert len(world.confirmed_to(recipient(1))) == 1


async def test_inputs_spent_elsewhere_goes_back_to_pending_and_is_paid_once(
    world: BtcWorld, engine: AsyncEngine
) -> None:
    world.fund(1_000_000, 800_000)
    row_id = await add_payout(engine, 2, recipient(2), 60_000)
    world.esplora_sim.faults.set(Fault(path="/tx", hang=True))  # the node never sees it
    proc = processor(world, engine)
    await proc.run()
    stored = await payout_row(engine, row_id)
    assert stored["status"] == "broadcasting"
    assert world.paid_to(recipient(2)) == []
    world.esplora_sim.faults.clear()
    # While the inputs are unspent, reconciliation re-broadcasts the same tx; here they get spent first, by a
    # transaction mined at once (1 confirmation).
    world.esplora_sim.spend_inputs_elsewhere(stored["raw_tx"])
    for _ in range(5):  # 1..5 confirmations: not yet a proof
        report = await proc.run()
        assert report.returned_to_pending == []
        assert (await payout_row(engine, row_id))["status"] == "broadcasting"
        assert len(await payout_candidates(engine, row_id)) == 1
        world.mine()
    report = await proc.run()  # 6 confirmations: no candidate can ever confirm
    assert report.returned_to_pending == [row_id]
    assert report.sent == [row_id]
    world.mine()
    assert (await proc.run()).completed == [row_id]
    final = await payout_row(engine, row_id)
    assert final["status"] == "completed"
    assert final["btc_transaction_hash"] != stored["btc_transaction_hash"]
    paid = world.confirmed_to(recipient(2))
    assert [(p["txid"], p["value"]) for p in paid] == [(final["btc_transaction_hash"], 60_000)]
    assert [c["status"] for c in await payout_candidates(engine, row_id)] == ["dead", "active"]


async def test_mempool_conflict_is_not_a_proof(world: BtcWorld, engine: AsyncEngine) -> None:
    """Inputs spent only by an unconfirmed conflicting tx: the stored tx may still win, so no new payout."""
    coin_txid, coin_vout = world.esplora_sim.fund(world.wallet_address, 1_000_000)
    row_id = await add_payout(engine, 3, recipient(3), 60_000)
    world.esplora_sim.faults.set(Fault(path="/tx", hang=True))
    proc = processor(world, engine)
    await proc.run()
    assert (await payout_row(engine, row_id))["status"] == "broadcasting"
    world.esplora_sim.faults.clear()
    # Someone spends the same coin; the conflicting tx sits unconfirmed in the mempool.
    conflict = build_payout(
        wallet_from_wif(WIF, "testnet"),
        parse_address(world.wallet_address, "testnet"),
        900_000,
        [Utxo(coin_txid, coin_vout, 1_000_000)],
        sat_per_vbyte=60,
        btc_usd=Decimal(60000),
        max_fee_usd=Decimal(50),
    )
    world.esplora_sim.broadcast(conflict.raw_hex)
    report = await proc.run()
    assert report.returned_to_pending == []
    assert report.completed == []
    assert (await payout_row(engine, row_id))["status"] == "broadcasting"
    assert world.paid_to(recipient(3)) == []
    world.mine()  # now confirmed, but with 1 confirmation only: still no proof
    report = await proc.run()
    assert report.returned_to_pending == []
    assert (await payout_row(engine, row_id))["status"] == "broadcasting"


async def test_crash_between_store_and_broadcast_rebroadcasts_same_txid(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000)
    row_id = await add_payout(engine, 4, recipient(4), 80_000)
    scope = anyio.CancelScope()

    async def crash(_: int) -> None:
        scope.cancel()
        await anyio.lowlevel.checkpoint()

    with scope:
        await processor(world, engine, before_broadcast=crash).run()
    assert scope.cancelled_caught
    stored = await payout_row(engine, row_id)
    assert stored["status"] == "broadcasting"
    assert world.paid_to(recipient(4)) == []
    proc = processor(world, engine)
    assert (await proc.run()).sent == [row_id]
    world.mine()
    assert (await proc.run()).completed == [row_id]
    final = await payout_row(engine, row_id)
    assert final["btc_transaction_hash"] == stored["btc_transaction_hash"]
    assert [p["txid"] for p in world.confirmed_to(recipient(4))] == [stored["btc_transaction_hash"]]


async def test_two_processors_on_one_queue_pay_once(world: BtcWorld, engine: AsyncEngine, money_db_url: str) -> None:
    world.fund(*[500_000] * 30)
    ids = [await add_payout(engine, 100 + n, recipient(100 + n), 20_000 + n) for n in range(12)]
    other_engine = create_async_engine(money_db_url, pool_size=5)
    try:
        procs = [processor(world, engine), processor(world, other_engine)]
        for _ in range(2):
            async with anyio.create_task_group() as tg:
                for p in procs:
                    tg.start_soon(p.run)
            world.mine()
    finally:
        await other_engine.dispose()
    counts = Counter(p["address"] for p in world.esplora_sim.payments() if p["status"] == "confirmed")
    for n, row_id in enumerate(ids):
        row = await payout_row(engine, row_id)
        assert row["status"] == "completed"
        assert counts[recipient(100 + n)] == 1
        assert [p["value"] for p in world.paid_to(recipient(100 + n))] == [20_000 + n]


async def test_never_clearing_errors_fail_at_once(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000)
    mainnet = recipient(5, "main")
    wrong_net = await add_payout(engine, 5, mainnet, 50_000)
    garbage = await add_payout(engine, 6, "not-an-address", 50_000)
    dust = await add_payout(engine, 7, recipient(7), 293)  # P2WPKH dust is 294
    report = await processor(world, engine).run()
    assert report.failed == {wrong_net: "wrong_network", garbage: "invalid_address", dust: "below_dust"}
    for row_id in (wrong_net, garbage, dust):
        row = await payout_row(engine, row_id)
        assert row["status"] == "failed"
    assert world.esplora_sim.payments() == []


async def test_insufficient_funds_stays_pending_then_pays_once(world: BtcWorld, engine: AsyncEngine) -> None:
    row_id = await add_payout(engine, 8, recipient(8), 100_000)
    proc = processor(world, engine)
    for attempt in (1, 2):
        report = await proc.run()
        assert report.deferred == {row_id: "insufficient_funds"}
        row = await payout_row(engine, row_id)
        assert (row["status"], row["attempts"], row["failure_reason"]) == (
            "pending",
            attempt,
            "insufficient_funds",
        )
    world.esplora_sim.fund(world.wallet_address, 50_000, confirmed=False)  # unconfirmed coins do not count
    assert (await proc.run()).deferred == {row_id: "insufficient_funds"}
    world.fund(200_000)
    assert (await proc.run()).sent == [row_id]
    assert (await payout_row(engine, row_id))["failure_reason"] is None
    await proc.run()
    assert len(world.paid_to(recipient(8))) == 1


async def test_fee_cap_stays_pending_until_fees_drop(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(5_000_000)
    row_id = await add_payout(engine, 9, recipient(9), 100_000)
    world.esplora_sim.set_fee_estimates({"6": 900.0})  # ~127k sats ≈ 76 USD > 5 USD cap
    proc = processor(world, engine)
    report = await proc.run()
    assert report.deferred == {row_id: "fee_cap_exceeded"}
    assert (await payout_row(engine, row_id))["status"] == "pending"
    world.esplora_sim.set_fee_estimates({"6": 3.4})
    assert (await proc.run()).sent == [row_id]
    row = await payout_row(engine, row_id)
    assert row["network_fee"] * 60000 / 10**8 <= 5
    assert len(world.paid_to(recipient(9))) == 1


async def test_change_is_never_dust(world: BtcWorld, engine: AsyncEngine) -> None:
    # Coin = amount + fee without change + 200 sats: a change output would be dust, so there is none.
    world.esplora_sim.set_fee_estimates({"6": 2.0})
    world.fund(40_000 + 110 * 2 + 200)
    row_id = await add_payout(engine, 10, recipient(10), 40_000)
    assert (await processor(world, engine).run()).sent == [row_id]
    row = await payout_row(engine, row_id)
    tx = world.esplora_sim.txs[row["btc_transaction_hash"]]
    assert [o.value for o in tx.vout] == [40_000]
    assert all(o.value >= CHANGE_DUST for o in tx.vout)


async def test_upstream_down_stays_pending_then_pays(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000)
    row_id = await add_payout(engine, 11, recipient(11), 50_000)
    world.breakers = Breakers(make_settings(CB_BLOCKSTREAM_API_TTL_SECONDS=0.2), world.metrics)
    world.esplora_sim.faults.set(Fault(path="/address", status=503))
    proc = processor(world, engine)
    reasons = [(await proc.run()).deferred for _ in range(4)]
    assert reasons == [{row_id: "http_5xx"}] * 3 + [{row_id: "circuit_open"}]  # threshold 3 opens it
    row = await payout_row(engine, row_id)
    assert (row["status"], row["attempts"], row["failure_reason"]) == ("pending", 4, "circuit_open")
    world.esplora_sim.faults.clear()
    await anyio.sleep(0.3)
    assert (await proc.run()).sent == [row_id]
    assert len(world.paid_to(recipient(11))) == 1


async def test_sqlite_two_processors_pay_once(world: BtcWorld, tmp_path: Path) -> None:
    """Without row locks (SQLite, one process) the in-process wallet lock and the compare-and-set updates
    still make two processors pay every row once."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'payouts.sqlite3'}"
    engines = [create_async_engine(url), create_async_engine(url)]
    try:
        await upgrade(engines[0])
        world.fund(*[400_000] * 12)
        ids = [await add_payout(engines[0], 200 + n, recipient(200 + n), 30_000 + n) for n in range(8)]
        procs = [processor(world, e) for e in engines]
        for _ in range(2):
            async with anyio.create_task_group() as tg:
                for p in procs:
                    tg.start_soon(p.run)
            world.mine()
        for n, row_id in enumerate(ids):
            assert (await payout_row(engines[0], row_id))["status"] == "completed"
            assert [p["value"] for p in world.confirmed_to(recipient(200 + n))] == [30_000 + n]
    finally:
        for e in engines:
            await e.dispose()


async def test_job_sets_pending_and_broadcasting_gauges(world: BtcWorld, engine: AsyncEngine) -> None:
    from types import SimpleNamespace

    from jobs.context import JobContext
    from jobs.payouts import make_payout_job

    def gauge(kind: str) -> float | None:
        return world.metrics.registry.get_sample_value("icy_backend_pending_transactions", {"transaction_type": kind})

    world.fund(1_000_000)
    await add_payout(engine, 7, recipient(7), 70_000)
    clients = SimpleNamespace(esplora=world.esplora(), prices=world.prices())
    job = make_payout_job(engine, clients, world.settings, world.metrics)  # type: ignore[arg-type]
    world.esplora_sim.faults.set(Fault(path="/tx", hang_after=True))
    await job(JobContext("btc_pending_transaction_processing"))
    assert (gauge("btc_payout"), gauge("btc_broadcasting")) == (1, 1)
    world.esplora_sim.faults.clear()
    await job(JobContext("btc_pending_transaction_processing"))
    assert (gauge("btc_payout"), gauge("btc_broadcasting"), gauge("btc_confirming")) == (0, 0, 1)
    world.mine()
    await job(JobContext("btc_pending_transaction_processing"))
    assert (gauge("btc_payout"), gauge("btc_broadcasting"), gauge("btc_confirming")) == (0, 0, 0)
    assert len(world.confirmed_to(recipient(7))) == 1
