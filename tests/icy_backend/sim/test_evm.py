"""EVM JSON-RPC simulator: logs with real topics/ABI data, ranges and limits, batches, eth_call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from eth_abi.abi import decode, encode
from eth_utils.crypto import keccak

from icy_backend.sim.evm import EvmSim
from icy_backend.sim.evm_chain import sim_address
from icy_backend.sim.faults import Fault

pytestmark = pytest.mark.anyio

ALICE = sim_address("alice")
BOB = sim_address("bob")
TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
SWAP = "0x" + keccak(text="Swap(uint256,string,uint256)").hex()


@pytest.fixture
def sim() -> EvmSim:
    return EvmSim()


@pytest.fixture
async def client(sim: EvmSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as c:
        yield c


async def rpc(client: httpx.AsyncClient, method: str, *params: Any) -> Any:
    r = await client.post("/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == 1
    assert "error" not in body, body
    return body["result"]


async def rpc_error(client: httpx.AsyncClient, method: str, *params: Any) -> dict[str, Any]:
    r = await client.post("/", json={"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    body = r.json()
    assert "result" not in body
    return dict(body["error"])


async def test_chain_basics(sim: EvmSim, client: httpx.AsyncClient) -> None:
    assert await rpc(client, "eth_chainId") == hex(84532)
    assert await rpc(client, "net_version") == "84532"
    sim.set_chain_id(8453)
    assert await rpc(client, "eth_chainId") == hex(8453)
    sim.mine_empty(5)
    assert await rpc(client, "eth_blockNumber") == "0x5"
    latest = await rpc(client, "eth_getBlockByNumber", "latest", False)
    assert latest["number"] == "0x5"
    assert int(latest["baseFeePerGas"], 16) > 0
    assert int(latest["timestamp"], 16) > int((await rpc(client, "eth_getBlockByNumber", "0x4", True))["timestamp"], 16)
    assert await rpc(client, "eth_getBlockByNumber", "0x64", False) is None
    assert (await rpc_error(client, "eth_nope"))["code"] == -32601


async def test_transfer_and_swap_logs(sim: EvmSim, client: httpx.AsyncClient) -> None:
    mint_hash = sim.mint(ALICE, 10 * 10**18)
    sim.mine_block()  # block 1
    tx_hash = sim.transfer(ALICE, BOB, 3 * 10**18)
    sim.mine_block()  # block 2
    swap_hash = sim.emit_swap(2 * 10**18, "tb1qexampleaddress", 4_950, ALICE)
    number = sim.mine_block()  # block 3
    assert number == 3

    logs = await rpc(
        client,
        "eth_getLogs",
        {
            "address": [sim.icy_address],
            "topics": [[TRANSFER], None, None],
            "fromBlock": "0x2",
            "toBlock": "0x2",
        },
    )
    assert len(logs) == 1
    log = logs[0]
    assert set(log) == {
        "address",
        "topics",
        "data",
        "blockNumber",
        "blockHash",
        "transactionHash",
        "transactionIndex",
        "logIndex",
        "removed",
    }
    assert log["address"] == sim.icy_address.lower()
    assert log["topics"][0] == TRANSFER
    assert log["topics"][1] == "0x" + "00" * 12 + ALICE.lower()[2:]
    assert log["topics"][2] == "0x" + "00" * 12 + BOB.lower()[2:]
    assert int(log["data"], 16) == 3 * 10**18
    assert log["blockNumber"] == "0x2"
    assert log["transactionHash"] == tx_hash
    assert log["removed"] is False

    # Inclusive ranges: [1, 3] holds the mint, the transfer and the swap's Transfer.
    all_transfers = await rpc(
        client,
        "eth_getLogs",
        {"address": sim.icy_address, "topics": [TRANSFER], "fromBlock": "0x1", "toBlock": "0x3"},
    )
    assert [entry["transactionHash"] for entry in all_transfers] == [mint_hash, tx_hash, swap_hash]
    assert await rpc(client, "eth_getLogs", {"address": sim.icy_address, "fromBlock": "0x4", "toBlock": "latest"}) == []

    swaps = await rpc(client, "eth_getLogs", {"address": [sim.swap_address], "topics": [[SWAP]], "fromBlock": "0x0"})
    assert len(swaps) == 1
    assert swaps[0]["topics"] == [SWAP]
    icy, btc_address, btc = decode(["uint256", "string", "uint256"], bytes.fromhex(swaps[0]["data"][2:]))
    assert (icy, btc_address, btc) == (2 * 10**18, "tb1qexampleaddress", 4_950)
    assert swaps[0]["logIndex"] == "0x1"  # after the Transfer log of the same transaction
    receipt = await rpc(client, "eth_getTransactionReceipt", swap_hash)
    assert receipt["status"] == "0x1"
    assert receipt["blockNumber"] == "0x3"
    assert len(receipt["logs"]) == 2
    tx = await rpc(client, "eth_getTransactionByHash", swap_hash)
    assert tx["blockNumber"] == "0x3"
    assert tx["from"] == ALICE.lower()
    assert sim.balance_of(sim.swap_address) == 2 * 10**18


async def test_pending_transactions_have_no_receipt(sim: EvmSim, client: httpx.AsyncClient) -> None:
    tx_hash = sim.mint(ALICE, 1)
    assert await rpc(client, "eth_getTransactionReceipt", tx_hash) is None
    assert (await rpc(client, "eth_getTransactionByHash", tx_hash))["blockNumber"] is None
    r = await client.post(
        "/_sim/swap", json={"icy_amount": "5", "btc_address": "tb1q", "btc_amount": "600", "from": BOB}
    )
    assert r.status_code == 200
    assert (await client.post("/_sim/mine")).json() == {"block_number": 1}
    assert (
        len(await rpc(client, "eth_getLogs", {"address": sim.swap_address, "fromBlock": "0x1", "toBlock": "0x1"})) == 1
    )
    assert await rpc(client, "eth_getTransactionReceipt", tx_hash) is not None


async def test_log_range_limit(sim: EvmSim, client: httpx.AsyncClient) -> None:
    sim.mine_empty(30)
    sim.set_log_range_limit(10)
    assert await rpc(client, "eth_getLogs", {"fromBlock": "0x1", "toBlock": "0xa"}) == []
    error = await rpc_error(client, "eth_getLogs", {"fromBlock": "0x1", "toBlock": "0xb"})
    assert error["code"] == -32005
    assert "range" in error["message"]


async def test_batch(sim: EvmSim, client: httpx.AsyncClient) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_unknown", "params": []},
    ]
    body = (await client.post("/", json=batch)).json()
    assert [item["id"] for item in body] == [1, 2, 3]
    assert body[0]["result"] == hex(84532)
    assert body[1]["result"] == "0x0"
    assert body[2]["error"]["code"] == -32601
    assert (await client.post("/", content=b"{not json")).json()["error"]["code"] == -32700


async def test_eth_call_total_supply_and_balance(sim: EvmSim, client: httpx.AsyncClient) -> None:
    sim.mint(ALICE, 7 * 10**18)
    sim.mint(BOB, 10**30)
    supply = await rpc(client, "eth_call", {"to": sim.icy_address, "input": "0x18160ddd"}, "latest")
    assert int(supply, 16) == 7 * 10**18 + 10**30
    data = "0x70a08231" + encode(["address"], [BOB]).hex()
    balance = await rpc(client, "eth_call", {"from": "0x" + "00" * 20, "to": sim.icy_address, "data": data}, "latest")
    assert decode(["uint256"], bytes.fromhex(balance[2:]))[0] == 10**30
    reverted = await rpc_error(client, "eth_call", {"to": sim.icy_address, "data": "0xdeadbeef"}, "latest")
    assert reverted["code"] == 3


async def test_method_specific_fault(sim: EvmSim, client: httpx.AsyncClient) -> None:
    sim.faults.set(Fault(path="eth_getLogs", status=503))
    assert await rpc(client, "eth_blockNumber") == "0x0"
    r = await client.post("/", json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{}]})
    assert r.status_code == 503
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{}]}]
    assert (await client.post("/", json=batch)).status_code == 503
    await client.put("/_sim/faults", json={"path": "eth_chainId", "malformed": True})
    r = await client.post("/", json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    with pytest.raises(ValueError):
        r.json()


async def test_transaction_count_latest_excludes_pending(sim: EvmSim, client: httpx.AsyncClient) -> None:
    # Like geth: "latest" counts mined transactions only; "pending" adds the sender's pending ones. A simulator
    # that counted pending under "latest" would hide a double send in the swap-request processor.
    sim.mint(ALICE, 10)
    sim.transfer(ALICE, BOB, 1)
    assert await rpc(client, "eth_getTransactionCount", ALICE, "pending") == "0x1"
    assert await rpc(client, "eth_getTransactionCount", ALICE, "latest") == "0x0"
    sim.mine_block()
    assert await rpc(client, "eth_getTransactionCount", ALICE, "latest") == "0x1"
