"""Swap requests end to end: ICY in → indexed → swap() sent once → completed → Swap event → one BTC payout."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select

from icy_backend.db.tables import onchain_btc_processed_transactions, swap_requests
from icy_backend.domain.swap_requests import SwapRequestProcessor
from icy_backend.routes.swap import routes as swap_routes
from icy_backend.sim.evm_swap import apply_raw_transaction
from icy_backend.sim.faults import Fault
from jobs.context import JobContext
from jobs.indexers import make_icy_indexer, make_swap_indexer
from jobs.payouts import make_payout_job
from jobs.swap_requests import make_swap_request_job
from tests.icy_backend.money.conftest import (
    HOLDER,
    SIGNER_ADDRESS,
    SIGNER_KEY,
    SwapWorld,
    api_client,
    make_settings,
    recipient,
)
from tests.icy_backend.money.evm_nodes import Node, evm_client

pytestmark = pytest.mark.anyio

USER = "0x" + "22" * 20


async def _request_row(sw: SwapWorld) -> dict[str, object]:
    async with sw.engine.connect() as conn:
        return dict((await conn.execute(select(swap_requests))).mappings().one())


def _signer_txs(sw: SwapWorld) -> list[Any]:
    return [tx for tx in sw.evm_sim.txs.values() if tx.frm.lower() == SIGNER_ADDRESS.lower()]


async def test_swap_request_end_to_end(swap_world: SwapWorld) -> None:
    sw = swap_world
    settings = make_settings(
        **{
            k: getattr(sw.settings, k)
            for k in (
                "BLOCKCHAIN_BTC_TREASURY_ADDRESS",
                "BLOCKCHAIN_ICY_CONTRACT_ADDR",
                "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR",
                "BLOCKCHAIN_CHAIN_ID",
            )
        },
        BLOCKCHAIN_CONFIRMATIONS=1,
    )
    sw.settings = settings
    metrics = sw.btc.metrics
    # Worked example: 100 000 ICY circulate against 1 BTC in the treasury → ratio = 10^5 ICY/BTC × 10^8 = 10^13.
    # 100 ICY = 10^20 wei → sats = 10^20 // (10^13 × 100) = 100 000 sats (0.001 BTC). The old code divided by
    # the ratio alone: 10^20 // 10^13 = 10 000 000 sats, 100 times too much.
    assert await sw.oracle.icy_btc_ratio() == 10**13
    sw.evm_sim.transfer(HOLDER, USER, 100 * 10**18)  # supply unchanged, so the ratio too
    icy_tx = sw.evm_sim.transfer(USER, SIGNER_ADDRESS, 100 * 10**18)
    sw.evm_sim.mine_block()
    sw.evm_sim.mine_block()  # BLOCKCHAIN_CONFIRMATIONS=1: the transfer is one block deep
    address = recipient(42)
    async with api_client(swap_routes, sw.state()) as client:
        answer = await client.post(
            "/api/v1/swap", json={"icy_amount": str(100 * 10**18), "btc_address": address, "icy_tx": icy_tx}
        )
    assert answer.status_code == 200, answer.text

    job = make_swap_request_job(sw.engine, sw.clients, settings, metrics, sw.oracle)
    # Not indexed yet: the request waits (and that is not a failed item).
    ctx = JobContext("swap_request_processing")
    await job(ctx)
    assert (ctx.items_succeeded, ctx.items_failed) == (0, 0)
    assert (await _request_row(sw))["status"] == "pending"

    await make_icy_indexer(sw.engine, sw.clients, settings, metrics)(JobContext("icy_transaction_indexing"))

    # The send is accepted by the node but the answer never comes (timeout).
    sw.evm_sim.faults.set(Fault(path="eth_sendRawTransaction", hang_after=True))
    ctx = JobContext("swap_request_processing")
    await job(ctx)
    assert ctx.failure_kinds == {"send_timeout": 1}
    row = await _request_row(sw)
    assert row["status"] == "sending"
    assert row["btc_amount"] == 100_000
    assert len(_signer_txs(sw)) == 1
    sw.evm_sim.faults.clear()

    # The job runs again before the block: the same bytes are re-sent ("already known"), nothing new.
    await job(JobContext("swap_request_processing"))
    assert len(_signer_txs(sw)) == 1
    assert (await _request_row(sw))["evm_tx_hash"] == row["evm_tx_hash"]
    assert (
        metrics.registry.get_sample_value("icy_backend_pending_transactions", {"transaction_type": "swap_request"}) == 1
    )

    sw.evm_sim.mine_block()
    ctx = JobContext("swap_request_processing")
    await job(ctx)
    assert ctx.items_succeeded == 1
    final = await _request_row(sw)
    assert final["status"] == "completed"
    assert final["processed_at"] is not None
    assert len(_signer_txs(sw)) == 1
    receipt = sw.evm_sim.txs[str(row["evm_tx_hash"])]
    assert receipt.status == 1
    assert (
        metrics.registry.get_sample_value("icy_backend_pending_transactions", {"transaction_type": "swap_request"}) == 0
    )

    # Runs after completion do nothing.
    await job(JobContext("swap_request_processing"))
    assert len(_signer_txs(sw)) == 1

    # The Swap event becomes exactly one payout, paid once.
    sw.evm_sim.mine_block()  # BLOCKCHAIN_CONFIRMATIONS=1: the Swap event is one block deep
    swap_indexer = make_swap_indexer(sw.engine, sw.clients, settings, metrics, sw.oracle.icy_btc_ratio)
    await swap_indexer(JobContext("icy_swap_transaction_indexing"))
    await swap_indexer(JobContext("icy_swap_transaction_indexing"))
    T = onchain_btc_processed_transactions
    async with sw.engine.connect() as conn:
        payouts = (await conn.execute(select(T))).mappings().all()
    assert len(payouts) == 1
    assert (payouts[0]["subtotal"], payouts[0]["service_fee"], payouts[0]["total"]) == (100_000, 3000, 97_000)
    payout_job = make_payout_job(sw.engine, sw.clients, settings, metrics)
    for _ in range(2):
        await payout_job(JobContext("btc_pending_transaction_processing"))
        sw.btc.mine()
    assert [p["value"] for p in sw.btc.confirmed_to(address)] == [97_000]
    assert (
        metrics.registry.get_sample_value("icy_backend_pending_transactions", {"transaction_type": "btc_payout"}) == 0
    )


async def test_request_for_a_mainnet_address_fails(swap_world: SwapWorld) -> None:
    sw = swap_world
    icy_tx = sw.evm_sim.transfer(HOLDER, SIGNER_ADDRESS, 100 * 10**18)
    sw.evm_sim.mine_block()
    sw.evm_sim.mine_block()  # BLOCKCHAIN_CONFIRMATIONS=1: the transfer is one block deep
    async with sw.engine.begin() as conn:
        await conn.execute(
            swap_requests.insert().values(
                icy_amount=100 * 10**18, btc_address=recipient(1, "main"), icy_tx=icy_tx, status="pending"
            )
        )
    settings = make_settings(
        BLOCKCHAIN_ICY_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_CONTRACT_ADDR,
        BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR,
        BLOCKCHAIN_CONFIRMATIONS=1,
    )
    await make_icy_indexer(sw.engine, sw.clients, settings, sw.btc.metrics)(JobContext("icy"))
    report = await SwapRequestProcessor(sw.engine, sw.clients.evm, sw.oracle, settings).run()
    assert list(report.failed.values()) == ["invalid_address"]
    assert _signer_txs(sw) == []


async def test_transfer_to_someone_else_is_not_enough(swap_world: SwapWorld) -> None:
    sw = swap_world
    icy_tx = sw.evm_sim.transfer(HOLDER, USER, 100 * 10**18)  # not into the signer wallet
    sw.evm_sim.mine_block()
    async with sw.engine.begin() as conn:
        await conn.execute(
            swap_requests.insert().values(
                icy_amount=100 * 10**18, btc_address=recipient(1), icy_tx=icy_tx, status="pending"
            )
        )
    settings = make_settings(
        BLOCKCHAIN_ICY_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_CONTRACT_ADDR,
        BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR,
        BLOCKCHAIN_CONFIRMATIONS=1,
    )
    await make_icy_indexer(sw.engine, sw.clients, settings, sw.btc.metrics)(JobContext("icy"))
    report = await SwapRequestProcessor(sw.engine, sw.clients.evm, sw.oracle, settings).run()
    assert report.waiting == [1]
    assert _signer_txs(sw) == []


async def test_nonce_taken_by_another_tx_rebuilds_once(swap_world: SwapWorld) -> None:
    """The stored tx never reached the node and its nonce got used by another mined tx: it can never be
    mined, so the request is rebuilt — and swapped exactly once."""
    sw = swap_world
    settings = make_settings(
        BLOCKCHAIN_ICY_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_CONTRACT_ADDR,
        BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR,
        BLOCKCHAIN_CHAIN_ID=84532,
        BLOCKCHAIN_CONFIRMATIONS=1,
    )
    icy_tx = sw.evm_sim.transfer(HOLDER, SIGNER_ADDRESS, 100 * 10**18)
    sw.evm_sim.mine_block()
    sw.evm_sim.mine_block()  # BLOCKCHAIN_CONFIRMATIONS=1: the transfer is one block deep
    async with sw.engine.begin() as conn:
        await conn.execute(
            swap_requests.insert().values(
                icy_amount=100 * 10**18, btc_address=recipient(3), icy_tx=icy_tx, status="pending"
            )
        )
    await make_icy_indexer(sw.engine, sw.clients, settings, sw.btc.metrics)(JobContext("icy"))
    # A node that answers the nonce at a past block as real nodes do (the simulator answers the latest one).
    node = Node(sw.evm_sim, sw.evm_sim.node)
    proc = SwapRequestProcessor(sw.engine, evm_client(sw.btc.http, node), sw.oracle, settings)
    node.faults.set(Fault(path="eth_sendRawTransaction", hang=True))  # never reaches the node
    await proc.run()
    first = await _request_row(sw)
    assert first["status"] == "sending"
    node.faults.clear()
    # Another transaction from the signer wallet takes nonce 0 and is mined.
    other = Account.sign_transaction(
        {
            "type": 2,
            "chainId": 84532,
            "nonce": 0,
            "to": USER,
            "value": 0,
            "data": b"",
            "gas": 21_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**6,
        },
        SIGNER_KEY,
    )
    apply_raw_transaction(sw.evm_sim, "0x" + bytes(other.raw_transaction).hex())
    sw.evm_sim.mine_block()
    # Used at the head only: not BLOCKCHAIN_CONFIRMATIONS (1) deep yet, so nothing is given up.
    assert (await proc.run()).returned_to_pending == []
    sw.evm_sim.mine_block()
    report = await proc.run()
    assert report.returned_to_pending == [1]
    second = await _request_row(sw)
    assert second["status"] == "sending"
    assert second["evm_tx_hash"] != first["evm_tx_hash"]
    sw.evm_sim.mine_block()
    await proc.run()
    assert (await _request_row(sw))["status"] == "completed"
    swaps = [tx for tx in _signer_txs(sw) if tx.to == sw.evm_sim.swap_address.lower()]
    assert [tx.hash for tx in swaps] == [second["evm_tx_hash"]]
