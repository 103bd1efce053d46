"""Payouts that finish, on the Bitcoin node simulator and real PostgreSQL (issue 13's list).

Every claim is checked against the simulator's payments list, counting only ``confirmed`` entries on the final
chain: "paid once" means exactly one of those.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.esplora import EsploraClient
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.db.types import utcnow
from icy_backend.domain.btc_tx import parse_raw
from icy_backend.domain.payouts import PayoutProcessor
from icy_backend.domain.wallet import wallet_from_wif
from jobs.context import JobContext
from jobs.payouts import make_payout_job
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


def processor(world: BtcWorld, engine: AsyncEngine, esplora: EsploraClient | None = None) -> PayoutProcessor:
    return PayoutProcessor(
        engine, esplora or world.esplora(), world.prices(), world.settings, wallet_from_wif(WIF, "testnet")
    )


def sample(world: BtcWorld, name: str, **labels: str) -> float:
    return world.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_confirming_at_0_and_1_completed_at_2(world: BtcWorld, engine: AsyncEngine) -> None:
    world.settings = make_settings(BTC_PAYOUT_CONFIRMATIONS=2)
    world.fund(1_000_000)
    row_id = await add_payout(engine, 1, recipient(1), 50_000)
    proc = processor(world, engine)
    await proc.run()
    row = await payout_row(engine, row_id)
    assert (row["status"], row["confirmations"]) == ("confirming", 0)
    assert row["broadcast_at"] is not None
    assert world.confirmed_to(recipient(1)) == []
    world.mine()
    await proc.run()
    row = await payout_row(engine, row_id)
    assert (row["status"], row["confirmations"], row["processed_at"]) == ("confirming", 1, None)
    world.mine()
    report = await proc.run()
    assert report.completed == [row_id]
    row = await payout_row(engine, row_id)
    assert (row["status"], row["confirmations"]) == ("completed", 2)
    (paid,) = world.confirmed_to(recipient(1))
    assert (paid["txid"], paid["value"]) == (row["btc_transaction_hash"], 50_000)
    (cand,) = await payout_candidates(engine, row_id)
    assert (cand["txid"], cand["fee"]) == (row["btc_transaction_hash"], row["network_fee"])
    assert cand["broadcast_height"] == world.esplora_sim.height - 2
    world.mine(3)
    await proc.run()
    assert (await payout_row(engine, row_id))["confirmations"] == 2  # completed is final: not touched again


async def test_evicted_is_rebroadcast_with_the_same_txid(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000)
    row_id = await add_payout(engine, 2, recipient(2), 60_000)
    proc = processor(world, engine)
    await proc.run()
    txid = (await payout_row(engine, row_id))["btc_transaction_hash"]
    world.esplora_sim.evict(txid)  # a node restart or expiry
    assert not world.esplora_sim.tx_known(txid)
    await proc.run()
    assert world.esplora_sim.tx_known(txid)
    assert (await payout_row(engine, row_id))["status"] == "confirming"
    world.mine()
    assert (await proc.run()).completed == [row_id]
    assert [p["txid"] for p in world.confirmed_to(recipient(2))] == [txid]
    assert len(await payout_candidates(engine, row_id)) == 1


async def _run_job(world: BtcWorld, engine: AsyncEngine) -> None:
    clients = SimpleNamespace(esplora=world.esplora(), prices=world.prices())
    job = make_payout_job(engine, clients, world.settings, world.metrics)  # type: ignore[arg-type]
    await job(JobContext("btc_pending_transaction_processing"))


async def test_fee_spike_replaces_spending_every_input_of_the_first(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(40_000, 30_000)  # the first candidate needs both coins
    row_id = await add_payout(engine, 3, recipient(3), 65_000)
    world.esplora_sim.set_fees({"6": 5.0})
    await _run_job(world, engine)
    first = await payout_row(engine, row_id)
    assert first["status"] == "confirming"
    assert len(parse_raw(first["raw_tx"])[1]) == 2
    world.fund(500_000)  # a big coin a careless replacement would take alone
    # Fees spike: the mempool minimum rises above the payout's rate and evicts it.
    evicted = world.esplora_sim.set_fees({"6": 20.0}, mempool_min=12.0)
    assert first["btc_transaction_hash"] in evicted
    await _run_job(world, engine)
    row = await payout_row(engine, row_id)
    cands = await payout_candidates(engine, row_id)
    assert [c["status"] for c in cands] == ["replaced", "active"]
    assert row["status"] == "confirming"
    assert row["btc_transaction_hash"] == cands[1]["txid"] != cands[0]["txid"]
    assert set(parse_raw(cands[0]["raw_tx"])[1]) <= set(parse_raw(cands[1]["raw_tx"])[1])
    assert cands[1]["fee"] > cands[0]["fee"]
    assert sample(world, "icy_backend_payout_fee_bumps_total", outcome="replaced") == 1
    world.mine(min_fee_rate=12.0)
    await _run_job(world, engine)
    row = await payout_row(engine, row_id)
    assert (row["status"], row["btc_transaction_hash"], row["network_fee"]) == (
        "completed",
        cands[1]["txid"],
        cands[1]["fee"],
    )
    assert [p["txid"] for p in world.confirmed_to(recipient(3))] == [cands[1]["txid"]]
    assert sample(world, "icy_backend_payout_oldest_unconfirmed_seconds") == 0


async def test_estimate_rise_after_bump_after_blocks_bumps(world: BtcWorld, engine: AsyncEngine) -> None:
    """Still in the mempool, but unconfirmed for BTC_PAYOUT_BUMP_AFTER_BLOCKS blocks while the estimate rose."""
    world.settings = make_settings(BTC_PAYOUT_BUMP_AFTER_BLOCKS=2)
    world.fund(500_000)
    row_id = await add_payout(engine, 4, recipient(4), 65_000)
    world.esplora_sim.set_fees({"6": 5.0})
    proc = processor(world, engine)
    await proc.run()
    world.esplora_sim.set_fees({"6": 15.0})
    world.mine(1, min_fee_rate=10.0)  # a fee market: ours waits
    await proc.run()
    assert len(await payout_candidates(engine, row_id)) == 1  # one block only: not yet
    world.mine(1, min_fee_rate=10.0)
    report = await proc.run()
    assert report.bumps == ["replaced"]
    cands = await payout_candidates(engine, row_id)
    assert [c["status"] for c in cands] == ["replaced", "active"]
    world.mine(1, min_fee_rate=10.0)
    assert (await proc.run()).completed == [row_id]
    assert [p["txid"] for p in world.confirmed_to(recipient(4))] == [cands[1]["txid"]]


async def test_bump_over_the_fee_cap_is_not_sent_and_completes_when_fees_fall(
    world: BtcWorld, engine: AsyncEngine
) -> None:
    world.fund(1_000_000)
    row_id = await add_payout(engine, 5, recipient(5), 70_000)
    world.esplora_sim.set_fees({"6": 5.0})
    await _run_job(world, engine)
    txid = (await payout_row(engine, row_id))["btc_transaction_hash"]
    world.esplora_sim.set_fees({"6": 100.0}, mempool_min=80.0)  # a bump would cost ~8 USD > 5 USD cap
    accepted_before = len(world.esplora_sim.accepted)
    for _ in range(2):
        await _run_job(world, engine)
    assert len(world.esplora_sim.accepted) == accepted_before  # nothing new was sent
    row = await payout_row(engine, row_id)
    assert (row["status"], row["failure_reason"]) == ("confirming", "fee_cap_exceeded")
    assert len(await payout_candidates(engine, row_id)) == 1
    assert sample(world, "icy_backend_payout_fee_bumps_total", outcome="capped") == 2
    assert sample(world, "icy_backend_payout_fee_bumps_total", outcome="replaced") == 0
    assert sample(world, "icy_backend_payout_oldest_unconfirmed_seconds") > 0
    world.esplora_sim.set_fees({"6": 4.0}, mempool_min=1.0)  # fees fall
    await _run_job(world, engine)
    world.mine()
    await _run_job(world, engine)
    assert (await payout_row(engine, row_id))["status"] == "completed"
    assert [p["txid"] for p in world.confirmed_to(recipient(5))] == [txid]


@pytest.mark.parametrize("drop", [False, True])
async def test_reorg_of_the_payout_block_waits_for_reconfirmation(
    world: BtcWorld, engine: AsyncEngine, drop: bool
) -> None:
    world.settings = make_settings(BTC_PAYOUT_CONFIRMATIONS=2)
    world.fund(1_000_000)
    row_id = await add_payout(engine, 6, recipient(6), 80_000)
    proc = processor(world, engine)
    await proc.run()
    txid = (await payout_row(engine, row_id))["btc_transaction_hash"]
    world.mine()
    await proc.run()
    assert (await payout_row(engine, row_id))["confirmations"] == 1
    world.esplora_sim.reorg(1, drop=drop)
    world.mine()  # the new block at that height does not hold it (dropped) / it is back in the mempool
    report = await proc.run()
    assert report.completed == []
    row = await payout_row(engine, row_id)
    assert row["status"] == "confirming"
    assert row["confirmations"] in (0, 1)
    world.mine(2)
    await proc.run()
    row = await payout_row(engine, row_id)
    assert (row["status"], row["btc_transaction_hash"]) == ("completed", txid)
    assert [p["txid"] for p in world.confirmed_to(recipient(6))] == [txid]


async def test_foreign_spend_needs_six_confirmations_before_a_new_transaction(
    world: BtcWorld, engine: AsyncEngine
) -> None:
    world.fund(300_000)
    row_id = await add_payout(engine, 7, recipient(7), 90_000)
    proc = processor(world, engine)
    await proc.run()
    stored = await payout_row(engine, row_id)
    (coin,) = parse_raw(stored["raw_tx"])[1]
    world.fund(400_000)  # another coin for the new transaction, once one is allowed
    _foreign, conflicted = world.esplora_sim.spend(coin[0], coin[1], confirm=True)
    assert stored["btc_transaction_hash"] in conflicted
    accepted_before = len(world.esplora_sim.accepted)
    for _ in range(5):  # the foreign spend has 1..5 confirmations: no new transaction
        report = await proc.run()
        assert report.returned_to_pending == []
        assert len(world.esplora_sim.accepted) == accepted_before
        assert len(await payout_candidates(engine, row_id)) == 1
        world.mine()
    report = await proc.run()  # 6 confirmations: the first candidate can never confirm
    assert report.returned_to_pending == [row_id]
    cands = await payout_candidates(engine, row_id)
    assert [c["status"] for c in cands] == ["dead", "active"]
    assert coin not in parse_raw(cands[1]["raw_tx"])[1]
    world.mine()
    await proc.run()
    row = await payout_row(engine, row_id)
    assert (row["status"], row["btc_transaction_hash"]) == ("completed", cands[1]["txid"])
    assert [p["txid"] for p in world.confirmed_to(recipient(7))] == [cands[1]["txid"]]


def _refusing(app: Any, body: str) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """``app`` whose ``POST /tx`` answers 400 with ``body`` (without reaching the node)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/tx":
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await app(scope, receive, send)

    return wrapped


def _esplora_body(message: str, code: int = -26) -> str:
    return 'sendrawtransaction RPC error: {"code":' + str(code) + ',"message":"' + message + '"}'


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (_esplora_body("txn-already-known"), "confirming", None),
        (_esplora_body("txn-already-in-mempool"), "confirming", None),
        (_esplora_body("Transaction already in block chain", -27), "confirming", None),
        (_esplora_body("Transaction outputs already in utxo set", -27), "confirming", None),
        (_esplora_body("something no node has ever said"), "broadcasting", "broadcast_refused"),
        (_esplora_body("too many potential replacements"), "broadcasting", "broadcast_refused"),
        ("<html>502 bad gateway</html>", "broadcasting", "broadcast_invalid_response"),
        ('sendrawtransaction RPC error: {"message": 5}', "broadcasting", "broadcast_invalid_response"),
        (_esplora_body("bad-txns-inputs-missingorspent", -25), "broadcasting", "inputs_missing"),
        (_esplora_body("mandatory-script-verify-flag-failed (Signature must be zero)"), "failed", None),
        (_esplora_body("dust"), "failed", None),
    ],
)
async def test_refusal_classes(
    world: BtcWorld, engine: AsyncEngine, body: str, status: str, reason: str | None
) -> None:
    world.fund(1_000_000)
    row_id = await add_payout(engine, 8, recipient(8), 50_000)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=_refusing(world.esplora_sim.app, body)))
    world.http.append(http)
    esplora = EsploraClient(http, ["http://esplora"], world.breakers, world.metrics, deadline=1.0)
    report = await processor(world, engine, esplora).run()
    row = await payout_row(engine, row_id)
    assert row["status"] == status
    if status == "failed":
        assert report.failed == {row_id: row["failure_reason"]}
        assert [c["status"] for c in await payout_candidates(engine, row_id)] == ["dead"]
    else:
        assert row["failure_reason"] == reason
        assert report.failed == {}
    assert world.paid_to(recipient(8)) == []  # the wrapper never let it through
    if reason == "broadcast_invalid_response":
        # Not Esplora's format: an upstream failure the breaker counts, never a verdict on the payout.
        assert sample(world, "icy_backend_external_api_calls_total", api_name="blockstream_api", status="error") >= 1


@pytest.mark.parametrize("fees", ['{"6": "fast"}', '{"6": -1}', '{"six": 4.0}', "[1, 2]", "not json"])
async def test_malformed_fee_estimates_are_an_upstream_error(world: BtcWorld, engine: AsyncEngine, fees: str) -> None:
    world.fund(1_000_000)
    row_id = await add_payout(engine, 9, recipient(9), 50_000)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/fee-estimates":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": fees.encode()})
            return
        await world.esplora_sim.app(scope, receive, send)

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    world.http.append(http)
    esplora = EsploraClient(http, ["http://esplora"], world.breakers, world.metrics, deadline=1.0)
    report = await processor(world, engine, esplora).run()
    assert report.deferred == {row_id: "invalid_response"}
    row = await payout_row(engine, row_id)
    assert (row["status"], row["failure_reason"]) == ("pending", "invalid_response")
    assert world.paid_to(recipient(9)) == []


async def test_no_fee_estimate_at_or_below_the_target_waits(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000)
    row_id = await add_payout(engine, 10, recipient(10), 50_000)
    world.esplora_sim.set_fees({"12": 3.0, "144": 1.0})
    report = await processor(world, engine).run()
    assert report.deferred == {row_id: "no_fee_estimate"}
    world.esplora_sim.set_fees({"3": 9.0, "12": 3.0})  # 6 missing: the nearest smaller target (3) prices it
    await processor(world, engine).run()
    (cand,) = await payout_candidates(engine, row_id)
    assert float(cand["fee_rate"]) >= 9


async def test_daily_limit_defers_the_second_swap(world: BtcWorld, engine: AsyncEngine) -> None:
    world.settings = make_settings(BTC_PAYOUT_DAILY_LIMIT_SATS=100_000, BTC_PAYOUT_MAX_SATS=100_000)
    world.fund(1_000_000, 1_000_000)
    first = await add_payout(engine, 11, recipient(11), 60_000)
    second = await add_payout(engine, 12, recipient(12), 50_000)
    await _run_job(world, engine)
    assert (await payout_row(engine, first))["status"] == "confirming"
    row = await payout_row(engine, second)
    assert (row["status"], row["failure_reason"], row["broadcast_at"]) == ("pending", "daily_limit", None)
    assert await payout_candidates(engine, second) == []
    assert sample(world, "icy_backend_payout_deferrals_total", reason="daily_limit") == 1
    assert sample(world, "icy_backend_pending_transactions", transaction_type="btc_daily_limit") == 1
    world.mine()
    await _run_job(world, engine)
    assert (await payout_row(engine, first))["status"] == "completed"
    assert (await payout_row(engine, second))["status"] == "pending"  # completion does not free the window
    assert world.paid_to(recipient(12)) == []
    async with engine.begin() as conn:  # 24 h later
        await conn.execute(update(T).where(T.c.id == first).values(broadcast_at=utcnow() - timedelta(hours=25)))
    await _run_job(world, engine)
    world.mine()
    await _run_job(world, engine)
    assert (await payout_row(engine, second))["status"] == "completed"
    assert len(world.confirmed_to(recipient(11))) == len(world.confirmed_to(recipient(12))) == 1
    assert sample(world, "icy_backend_pending_transactions", transaction_type="btc_daily_limit") == 0


async def test_daily_limit_goes_oldest_first(world: BtcWorld, engine: AsyncEngine) -> None:
    world.settings = make_settings(BTC_PAYOUT_DAILY_LIMIT_SATS=100_000, BTC_PAYOUT_MAX_SATS=100_000)
    world.fund(1_000_000, 1_000_000, 1_000_000)
    await add_payout(engine, 13, recipient(13), 60_000)
    older = await add_payout(engine, 14, recipient(14), 50_000)
    younger = await add_payout(engine, 15, recipient(15), 30_000)  # would fit, but an older one waits
    await processor(world, engine).run()
    assert (await payout_row(engine, older))["failure_reason"] == "daily_limit"
    assert (await payout_row(engine, younger))["status"] == "pending"
    assert world.paid_to(recipient(15)) == []


async def test_held_payouts_are_never_built_signed_or_sent(world: BtcWorld, engine: AsyncEngine) -> None:
    world.fund(1_000_000)
    held = await add_payout(engine, 16, recipient(16), 50_000, status="held", hold_reason="over_limit")
    await _run_job(world, engine)
    world.mine()
    await _run_job(world, engine)
    row = await payout_row(engine, held)
    assert (row["status"], row["attempts"], row["btc_transaction_hash"]) == ("held", 0, None)
    assert await payout_candidates(engine, held) == []
    assert world.esplora_sim.payments() == []
    assert sample(world, "icy_backend_pending_transactions", transaction_type="btc_held") == 1
    assert sample(world, "icy_backend_pending_transactions", transaction_type="btc_payout") == 0


async def test_reservation_keeps_an_unsent_candidates_coins(world: BtcWorld, engine: AsyncEngine) -> None:
    """A candidate the node never saw still owns its coins: the next payout must not take them, although the
    node still lists them as unspent."""
    from icy_backend.sim.faults import Fault

    world.fund(500_000, 400_000)
    a = await add_payout(engine, 17, recipient(17), 50_000)
    b = await add_payout(engine, 18, recipient(18), 60_000)
    world.esplora_sim.faults.set(Fault(path="/tx", hang=True))  # the node sees neither transaction
    proc = processor(world, engine)
    await proc.run()
    world.esplora_sim.faults.clear()
    a_inputs = set(parse_raw((await payout_row(engine, a))["raw_tx"])[1])
    b_inputs = set(parse_raw((await payout_row(engine, b))["raw_tx"])[1])
    assert a_inputs and b_inputs
    assert not a_inputs & b_inputs
    await proc.run()  # both sent again, same bytes
    world.mine()
    await proc.run()
    for row_id, n in ((a, 17), (b, 18)):
        assert (await payout_row(engine, row_id))["status"] == "completed"
        assert len(world.confirmed_to(recipient(n))) == 1


async def test_a_stale_processor_never_moves_a_completed_payout_back(world: BtcWorld, engine: AsyncEngine) -> None:
    """Compare-and-set: a processor that read the row (and the chain) before another one completed it must not
    overwrite ``completed`` with what it saw (``completed`` is final)."""
    import anyio

    from icy_backend.sim.faults import Fault

    world.fund(1_000_000)
    row_id = await add_payout(engine, 19, recipient(19), 50_000)
    world.esplora_sim.faults.set(Fault(path="/tx", hang_after=True))  # the node takes it; the answer is lost
    await processor(world, engine).run()
    world.esplora_sim.faults.clear()
    assert (await payout_row(engine, row_id))["status"] == "broadcasting"
    paused, release = anyio.Event(), anyio.Event()

    async def slow_status(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/status"):
            messages: list[Any] = []

            async def keep(message: Any) -> None:
                messages.append(message)

            await world.esplora_sim.app(scope, receive, keep)  # the answer as of now: in the mempool
            paused.set()
            await release.wait()
            for message in messages:
                await send(message)
            return
        await world.esplora_sim.app(scope, receive, send)

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=slow_status))
    world.http.append(http)
    stale = processor(world, engine, EsploraClient(http, ["http://esplora"], world.breakers, world.metrics, deadline=5))
    async with anyio.create_task_group() as tg:
        tg.start_soon(stale.run)
        await paused.wait()
        world.mine()
        assert (await processor(world, engine).run()).completed == [row_id]
        release.set()
    row = await payout_row(engine, row_id)
    assert (row["status"], row["confirmations"]) == ("completed", 1)
    assert len(world.confirmed_to(recipient(19))) == 1


async def test_crash_between_storing_and_sending_a_replacement(world: BtcWorld, engine: AsyncEngine) -> None:
    """The replacement is stored, the process dies before sending it, the first candidate is still in the
    mempool (priced out of blocks): the next run sends the stored replacement instead of waiting forever."""
    import anyio

    world.settings = make_settings(BTC_PAYOUT_BUMP_AFTER_BLOCKS=1)
    world.fund(500_000)
    row_id = await add_payout(engine, 20, recipient(20), 70_000)
    world.esplora_sim.set_fees({"6": 5.0})
    await processor(world, engine).run()
    world.esplora_sim.set_fees({"6": 15.0})
    world.mine(1, min_fee_rate=10.0)  # ours waits
    scope = anyio.CancelScope()

    async def crash(point: str, _: int) -> None:
        if point == "bump_stored":
            scope.cancel()
            await anyio.lowlevel.checkpoint()

    with scope:
        await PayoutProcessor(
            engine, world.esplora(), world.prices(), world.settings, wallet_from_wif(WIF, "testnet"), checkpoint=crash
        ).run()
    assert scope.cancelled_caught
    cands = await payout_candidates(engine, row_id)
    assert len(cands) == 2 and not world.esplora_sim.tx_known(cands[1]["txid"])
    await processor(world, engine).run()
    assert world.esplora_sim.tx_known(cands[1]["txid"])
    assert [c["status"] for c in await payout_candidates(engine, row_id)] == ["replaced", "active"]
    world.mine(1, min_fee_rate=10.0)
    assert (await processor(world, engine).run()).completed == [row_id]
    assert [p["txid"] for p in world.confirmed_to(recipient(20))] == [cands[1]["txid"]]
