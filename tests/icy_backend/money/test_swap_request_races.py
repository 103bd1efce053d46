"""Swap requests on real infrastructure (SPEC §9): nodes that disagree, transactions held in a mempool past their
signature deadline, two processors on one queue. "Swapped once" = exactly one ``Swap`` event of the signer."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from icy_backend.clients.evm import EvmRpcClient
from icy_backend.db.tables import swap_requests
from icy_backend.domain import swap_requests as swap_requests_module
from icy_backend.domain.swap_requests import SwapRequestProcessor
from icy_backend.domain.swap_tx import decode_stored
from icy_backend.settings import Settings
from icy_backend.sim import abi
from icy_backend.sim.faults import Fault
from jobs.context import JobContext
from jobs.indexers import make_icy_indexer
from tests.icy_backend.money.conftest import HOLDER, SIGNER_ADDRESS, SwapWorld, make_settings, recipient
from tests.icy_backend.money.evm_nodes import Node, evm_client

pytestmark = pytest.mark.anyio

ICY = 10**18
CONFIRMATIONS = 2


def _settings(sw: SwapWorld) -> Settings:
    return make_settings(
        BLOCKCHAIN_BTC_TREASURY_ADDRESS=sw.settings.BLOCKCHAIN_BTC_TREASURY_ADDRESS,
        BLOCKCHAIN_ICY_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_CONTRACT_ADDR,
        BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR=sw.settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR,
        BLOCKCHAIN_CHAIN_ID=84532,
        BLOCKCHAIN_CONFIRMATIONS=CONFIRMATIONS,
    )


def _evm(sw: SwapWorld, *nodes: Node) -> EvmRpcClient:
    return evm_client(sw.btc.http, *nodes)


async def _requests(sw: SwapWorld, settings: Settings, n: int, *, spare_icy: int = 0) -> list[int]:
    """``n`` users each send 100 ICY to the signer wallet and ask for a swap; ``spare_icy`` more ICY of another
    user (whose request is not made yet) sits in the signer wallet, ready to be spent by a wrong second swap."""
    ids: list[int] = []
    txs: list[str] = []
    for i in range(n):
        user = "0x" + f"{0x40 + i:02x}" * 20
        sw.evm_sim.transfer(HOLDER, user, 100 * ICY)
        txs.append(sw.evm_sim.transfer(user, SIGNER_ADDRESS, 100 * ICY))
    if spare_icy:
        sw.evm_sim.transfer(HOLDER, SIGNER_ADDRESS, spare_icy)
    sw.evm_sim.mine_empty(1 + CONFIRMATIONS)
    async with sw.engine.begin() as conn:
        for i, icy_tx in enumerate(txs):
            result = await conn.execute(
                swap_requests.insert().values(
                    icy_amount=100 * ICY, btc_address=recipient(50 + i), icy_tx=icy_tx, status="pending"
                )
            )
            ids.append(int(result.inserted_primary_key[0]))  # type: ignore[index]
    await make_icy_indexer(sw.engine, sw.clients, settings, sw.btc.metrics)(JobContext("icy"))
    return ids


def _swap_events(sw: SwapWorld) -> list[str]:
    """Hashes of the mined transactions from the signer wallet that emitted a ``Swap`` event."""
    return [
        tx.hash
        for tx in sw.evm_sim.txs.values()
        if tx.frm == SIGNER_ADDRESS.lower()
        and tx.block_number is not None
        and any(log.topics[0] == abi.SWAP_TOPIC for log in tx.logs)
    ]


def _signer_swap_calls(sw: SwapWorld) -> list[str]:
    swap = sw.evm_sim.swap_address.lower()
    return [tx.hash for tx in sw.evm_sim.txs.values() if tx.frm == SIGNER_ADDRESS.lower() and tx.to == swap]


async def _rows(sw: SwapWorld) -> list[dict[str, object]]:
    async with sw.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(swap_requests).order_by(swap_requests.c.id))).mappings()]


async def test_nonce_and_receipt_from_nodes_that_disagree_never_swap_twice(swap_world: SwapWorld) -> None:
    """The swap is mined; the up-to-date node shows the signer's nonce used, but its receipt and transaction
    reads fail over to a replica 10 blocks behind, which knows neither. Fix: the old code read the nonce from one
    node and the receipt from the other, concluded "nonce used by someone else", and sent a second swap that
    spent another user's ICY."""
    sw = swap_world
    settings = _settings(sw)
    primary = Node(sw.evm_sim, sw.evm_sim.node)
    replica = Node(sw.evm_sim, sw.evm_sim.view())
    (request,) = await _requests(sw, settings, 1, spare_icy=100 * ICY)
    proc = SwapRequestProcessor(sw.engine, _evm(sw, primary, replica), sw.oracle, settings)
    assert (await proc.run()).sent == [request]
    sw.evm_sim.mine_empty(1 + CONFIRMATIONS + 1)  # mined, and deeper than BLOCKCHAIN_CONFIRMATIONS
    assert len(_swap_events(sw)) == 1

    replica.node.lag = 10
    primary.faults.set(Fault(path="eth_getTransactionReceipt", status=503))
    primary.faults.set(Fault(path="eth_getTransactionByHash", status=503))
    for _ in range(3):
        report = await proc.run()
        assert report.returned_to_pending == []
        sw.evm_sim.mine_block()
    assert (await _rows(sw))[0]["status"] == "sending"
    assert len(_signer_swap_calls(sw)) == 1
    assert len(_swap_events(sw)) == 1

    primary.faults.clear()
    replica.node.lag = 0
    assert (await proc.run()).completed == [request]
    assert len(_signer_swap_calls(sw)) == 1
    assert len(_swap_events(sw)) == 1


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_request_held_past_its_deadline_is_replaced_at_the_same_nonce_and_swaps_once(
    swap_world: SwapWorld,
) -> None:
    sw = swap_world
    settings = _settings(sw)
    node = Node(sw.evm_sim, sw.evm_sim.node, hold=True)  # a congested mempool: nothing is mined yet
    (request,) = await _requests(sw, settings, 1, spare_icy=100 * ICY)
    clock = Clock()
    proc = SwapRequestProcessor(sw.engine, _evm(sw, node), sw.oracle, settings, clock=clock)
    assert (await proc.run()).sent == [request]
    first = (await _rows(sw))[0]
    assert (first["evm_nonce"], first["signature_deadline"]) == (0, int(clock.now) + 600)
    sw.evm_sim.mine_empty(3)
    # Still minutes before the deadline: the same bytes again ("already known"), no replacement.
    clock.now += 400
    assert (await proc.run()).replaced == []
    assert [t.hash for t in node.pool.values()] == [first["evm_tx_hash"]]

    clock.now = int(str(first["signature_deadline"])) - 100  # under 2 minutes left
    report = await proc.run()
    assert report.replaced == [request]
    second = (await _rows(sw))[0]
    assert second["status"] == "sending"
    assert second["evm_nonce"] == 0
    assert second["signature_deadline"] == int(clock.now) + 600  # a fresh authorisation
    assert second["replaced_tx_hashes"] == first["evm_tx_hash"]
    old, new = decode_stored(str(first["signed_tx"])), decode_stored(str(second["signed_tx"]))
    assert new.nonce == old.nonce == 0
    assert new.fees.max_fee * 10 >= old.fees.max_fee * 11
    assert new.fees.max_priority * 10 >= old.fees.max_priority * 11
    # The node took the replacement in place of the original (it refuses one that is not 10 % dearer).
    assert [t.hash for t in node.pool.values()] == [second["evm_tx_hash"]]

    node.release()
    sw.evm_sim.mine_block()
    assert (await proc.run()).completed == [request]
    final = (await _rows(sw))[0]
    assert final["evm_tx_hash"] == second["evm_tx_hash"]
    assert _swap_events(sw) == [second["evm_tx_hash"]]
    sw.evm_sim.mine_empty(CONFIRMATIONS + 1)
    await proc.run()
    assert _swap_events(sw) == [second["evm_tx_hash"]]
    assert len(_signer_swap_calls(sw)) == 1


async def test_when_the_superseded_transaction_is_the_one_mined_the_request_completes_once(
    swap_world: SwapWorld,
) -> None:
    """The replacement is stored, but the node keeps (and mines) the original: the request is decided on the
    original's receipt and never goes back to ``pending`` (which would swap a second time)."""
    sw = swap_world
    settings = _settings(sw)
    node = Node(sw.evm_sim, sw.evm_sim.node, hold=True, accept_replacements=False)
    (request,) = await _requests(sw, settings, 1, spare_icy=100 * ICY)
    clock = Clock()
    proc = SwapRequestProcessor(sw.engine, _evm(sw, node), sw.oracle, settings, clock=clock)
    await proc.run()
    first = (await _rows(sw))[0]
    clock.now = int(str(first["signature_deadline"])) - 60
    assert (await proc.run()).replaced == [request]
    assert [t.hash for t in node.pool.values()] == [first["evm_tx_hash"]]  # replacement refused
    node.release()
    sw.evm_sim.mine_empty(1 + CONFIRMATIONS + 1)
    report = await proc.run()
    assert report.completed == [request]
    assert report.returned_to_pending == []
    assert (await _rows(sw))[0]["evm_tx_hash"] == first["evm_tx_hash"]
    for _ in range(2):
        await proc.run()
        sw.evm_sim.mine_block()
    assert _swap_events(sw) == [first["evm_tx_hash"]]
    assert len(_signer_swap_calls(sw)) == 1


async def test_two_processors_on_one_queue_send_each_request_once(swap_world: SwapWorld, money_db_url: str) -> None:
    """Two app instances (two engines, two clients) on one PostgreSQL database work the same queue at once:
    the sender lock gives every request its own nonce, so every transaction is accepted the first time."""
    sw = swap_world
    settings = _settings(sw)
    ids = await _requests(sw, settings, 4)
    other_engine = create_async_engine(money_db_url, pool_size=5, max_overflow=10)  # a second app instance
    nodes = [Node(sw.evm_sim, sw.evm_sim.node), Node(sw.evm_sim, sw.evm_sim.node)]
    for node in nodes:
        # A send takes a while to reach the node: another processor may allocate a nonce meanwhile.
        node.faults.set(Fault(path="eth_sendRawTransaction", latency_ms=200))
    try:
        processors = [
            SwapRequestProcessor(sw.engine, _evm(sw, nodes[0]), sw.oracle, settings),
            SwapRequestProcessor(other_engine, _evm(sw, nodes[1]), sw.oracle, settings),
        ]
        outcomes: list[str | None] = []
        sent: list[int] = []

        async def work(proc: SwapRequestProcessor, collect: Callable[[str | None], None]) -> None:
            sent.extend((await proc.run(collect)).sent)

        async with anyio.create_task_group() as tg:
            for proc in processors:
                tg.start_soon(work, proc, outcomes.append)
        assert sorted(sent) == ids
        assert outcomes == [None] * len(ids)  # every send accepted at once: no nonce was used twice
        rows = await _rows(sw)
        assert sorted(int(str(r["evm_nonce"])) for r in rows) == [0, 1, 2, 3]
        assert len(_signer_swap_calls(sw)) == len(ids)
        sw.evm_sim.mine_empty(1 + CONFIRMATIONS)
        async with anyio.create_task_group() as tg:
            for proc in processors:
                tg.start_soon(work, proc, outcomes.append)
    finally:
        await other_engine.dispose()
    rows = await _rows(sw)
    assert [r["status"] for r in rows] == ["completed"] * len(ids)
    assert sorted(_swap_events(sw)) == sorted(str(r["evm_tx_hash"]) for r in rows)
    assert len(_signer_swap_calls(sw)) == len(ids)


async def test_replacements_stop_at_the_limit(swap_world: SwapWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that never takes a replacement: every ~8 minutes another one is stored (fees x1.1 each time); past
    MAX_REPLACEMENTS the request keeps re-sending what it has and says so (a person must look)."""
    monkeypatch.setattr(swap_requests_module, "MAX_REPLACEMENTS", 3)
    sw = swap_world
    settings = _settings(sw)
    node = Node(sw.evm_sim, sw.evm_sim.node, hold=True, accept_replacements=False)
    (request,) = await _requests(sw, settings, 1)
    clock = Clock()
    proc = SwapRequestProcessor(sw.engine, _evm(sw, node), sw.oracle, settings, clock=clock)
    await proc.run()
    outcomes: list[str | None] = []
    for _ in range(5):
        clock.now = int(str((await _rows(sw))[0]["signature_deadline"])) - 60
        await proc.run(outcomes.append)
    row = (await _rows(sw))[0]
    assert len(str(row["replaced_tx_hashes"]).split()) == 3
    assert outcomes[-2:] == ["replacement_limit", "replacement_limit"]
    node.release()  # the original is mined after all
    sw.evm_sim.mine_empty(1 + CONFIRMATIONS)
    assert (await proc.run()).completed == [request]
    assert len(_swap_events(sw)) == 1
