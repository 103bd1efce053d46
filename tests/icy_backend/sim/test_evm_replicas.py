"""EVM simulator as a messy chain: reorgs with and without re-inclusion, k Swap events in one transaction, and a
replica that lags (SPEC §11). Everything through the HTTP controls and the JSON-RPC wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from icy_backend.sim import abi
from icy_backend.sim.combined import PrefixRouter
from icy_backend.sim.evm import EvmSim
from icy_backend.sim.evm_chain import sim_address

pytestmark = pytest.mark.anyio

ALICE = sim_address("alice")
ICY = 10**18


@pytest.fixture
def sim() -> EvmSim:
    chain = EvmSim()
    chain.mint(ALICE, 100 * ICY)
    chain.mine_block()
    return chain


@pytest.fixture
async def client(sim: EvmSim) -> AsyncIterator[httpx.AsyncClient]:
    app = PrefixRouter({"/evm": sim.app, "/evm2": sim.view().app})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as c:
        yield c


async def rpc(client: httpx.AsyncClient, prefix: str, method: str, *params: Any) -> Any:
    r = await client.post(prefix, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    body = r.json()
    assert "error" not in body, body
    return body["result"]


async def swap_logs(client: httpx.AsyncClient, sim: EvmSim, prefix: str = "/evm") -> list[dict[str, Any]]:
    query = {"address": sim.swap_address, "topics": [abi.SWAP_TOPIC], "fromBlock": "0x0", "toBlock": "latest"}
    logs: list[dict[str, Any]] = await rpc(client, prefix, "eth_getLogs", query)
    return logs


async def test_k_swap_events_in_one_transaction_with_any_amount(sim: EvmSim, client: httpx.AsyncClient) -> None:
    body = {"icy_amount": str(2 * ICY), "btc_address": "tb1qx", "btc_amount": "999999999", "from": ALICE, "count": 3}
    r = await client.post("/evm/_sim/swap", json=body)
    assert r.status_code == 200
    assert r.json()["count"] == 3
    await client.post("/evm/_sim/mine")
    logs = await swap_logs(client, sim)
    assert len(logs) == 3
    assert {log["transactionHash"] for log in logs} == {r.json()["transaction_hash"]}
    assert len({(log["data"], tuple(log["topics"])) for log in logs}) == 1  # identical logs
    assert abi.decode_swap_data(logs[0]["data"]) == (2 * ICY, "tb1qx", 999_999_999)
    assert sim.balance_of(sim.swap_address) == 6 * ICY
    assert (await client.post("/evm/_sim/swap", json={**body, "colour": "red"})).status_code == 400
    assert (await client.post("/evm/_sim/swap", json={**body, "count": 0})).status_code == 400


async def test_reorg_with_reinclusion_moves_events_to_new_blocks(sim: EvmSim, client: httpx.AsyncClient) -> None:
    tx = sim.emit_swap(ICY, "tb1qa", 5_000, ALICE)
    sim.mine_block()
    sim.mine_empty(2)
    before = await swap_logs(client, sim)
    old_head = sim.head
    old_hashes = {b.hash for b in sim.blocks}
    r = await client.post("/evm/_sim/reorg", json={"depth": 3, "reinclude": True})
    assert r.status_code == 200
    assert r.json()["head"] == old_head + 1
    assert len(r.json()["removed"]) == 3
    after = await swap_logs(client, sim)
    assert len(after) == 1
    assert after[0]["transactionHash"] == tx
    assert int(after[0]["blockNumber"], 16) == int(before[0]["blockNumber"], 16) + 1  # a later block
    assert after[0]["blockHash"] != before[0]["blockHash"]
    new_hashes = [b.hash for b in sim.blocks[old_head - 2 :]]
    assert not set(new_hashes) & old_hashes  # every re-mined height has a new hash
    receipt = await rpc(client, "/evm", "eth_getTransactionReceipt", tx)
    assert receipt["blockHash"] == after[0]["blockHash"]
    assert sim.balance_of(sim.swap_address) == ICY


async def test_reorg_without_reinclusion_drops_events_and_state(sim: EvmSim, client: httpx.AsyncClient) -> None:
    tx = sim.emit_swap(ICY, "tb1qa", 5_000, ALICE)
    sim.mine_block()
    nonce = sim.nonces[ALICE.lower()]
    r = await client.post("/evm/_sim/reorg", json={"depth": 1, "reinclude": False})
    assert r.status_code == 200
    assert await swap_logs(client, sim) == []
    assert await rpc(client, "/evm", "eth_getTransactionReceipt", tx) is None
    assert await rpc(client, "/evm", "eth_getTransactionByHash", tx) is None
    assert sim.balance_of(ALICE) == 100 * ICY
    assert sim.nonces[ALICE.lower()] == nonce - 1
    for bad in ({"depth": 0}, {"depth": 1, "drop": True}, {"depth": 1, "reinclude": "no"}, {}):
        assert (await client.post("/evm/_sim/reorg", json=bad)).status_code == 400


async def test_lagging_replica_answers_like_a_node_behind(sim: EvmSim, client: httpx.AsyncClient) -> None:
    sim.mine_empty(10)
    tx = sim.emit_swap(ICY, "tb1qa", 5_000, ALICE)
    swap_block = sim.mine_block()
    sim.mine_empty(2)
    head = sim.head
    r = await client.put("/evm2/_sim/lag", json={"blocks": 5})
    assert r.status_code == 200
    assert r.json() == {"blocks": 5, "head": head - 5, "chain_head": head}
    assert (await client.put("/evm2/_sim/lag", json={"blocks": 5, "x": 1})).status_code == 400
    assert int(await rpc(client, "/evm2", "eth_blockNumber"), 16) == head - 5
    assert int(await rpc(client, "/evm", "eth_blockNumber"), 16) == head
    # past its head: null headers and receipts, empty logs, no transaction, the nonce of 5 blocks ago
    assert await rpc(client, "/evm2", "eth_getBlockByNumber", hex(swap_block), False) is None
    assert (await rpc(client, "/evm2", "eth_getBlockByNumber", "latest", False))["number"] == hex(head - 5)
    assert await rpc(client, "/evm2", "eth_getTransactionReceipt", tx) is None
    assert await rpc(client, "/evm2", "eth_getTransactionByHash", tx) is None
    assert await swap_logs(client, sim, "/evm2") == []
    assert len(await swap_logs(client, sim)) == 1
    assert int(await rpc(client, "/evm2", "eth_getTransactionCount", ALICE, "pending"), 16) == 0
    assert int(await rpc(client, "/evm", "eth_getTransactionCount", ALICE, "pending"), 16) == 1
    # caught up: the same answers as the primary
    await client.put("/evm2/_sim/lag", json={"blocks": 0})
    assert len(await swap_logs(client, sim, "/evm2")) == 1
    assert await rpc(client, "/evm2", "eth_getTransactionReceipt", tx) is not None


async def test_reorg_can_leave_removed_logs_in_get_logs(sim: EvmSim, client: httpx.AsyncClient) -> None:
    sim.emit_swap(ICY, "tb1qa", 5_000, ALICE)
    sim.mine_block()
    r = await client.post("/evm/_sim/reorg", json={"depth": 1, "reinclude": False, "report_removed": True})
    assert r.status_code == 200
    logs = await swap_logs(client, sim)
    assert len(logs) == 1
    assert logs[0]["removed"] is True
    assert logs[0]["blockHash"] == r.json()["removed"][0]


async def test_mine_control_answers_the_new_state_and_refuses_unknown_keys(
    sim: EvmSim, client: httpx.AsyncClient
) -> None:
    head = sim.head
    r = await client.post("/evm/_sim/mine", json={"blocks": 3})
    assert r.status_code == 200
    assert r.json() == {"block_number": head + 3}
    assert (await client.post("/evm/_sim/mine", json={"count": 3})).status_code == 400
    assert (await client.post("/evm/_sim/mine", json={"blocks": 0})).status_code == 400
    assert sim.head == head + 3
    lag = await client.get("/evm2/_sim/lag")
    assert lag.json() == {"blocks": 0, "head": head + 3, "chain_head": head + 3}


async def test_finalized_tag_lags_the_head_by_the_finality_depth(sim: EvmSim, client: httpx.AsyncClient) -> None:
    sim.mine_empty(10)
    sim.finality_depth = 4
    finalized = await rpc(client, "/evm", "eth_getBlockByNumber", "finalized", False)
    assert int(finalized["number"], 16) == sim.head - 4
    await client.put("/evm2/_sim/lag", json={"blocks": 2})
    behind = await rpc(client, "/evm2", "eth_getBlockByNumber", "safe", False)
    assert int(behind["number"], 16) == sim.head - 6
