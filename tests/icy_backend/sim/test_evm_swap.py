"""eth_sendRawTransaction of a signed EIP-1559 swap(...) call against the simulated swap contract."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from icy_backend.sim.abi import SWAP_TOPIC, decode_swap_data, swap_calldata
from icy_backend.sim.evm import EvmSim

pytestmark = pytest.mark.anyio

SIGNER = Account.from_key("0x" + "11" * 32)
USER = Account.from_key("0x" + "22" * 32)
ICY = 10**18
TYPES = {
    "Swap": [
        {"name": "icyAmount", "type": "uint256"},
        {"name": "btcAddress", "type": "string"},
        {"name": "btcAmount", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}


@pytest.fixture
def sim() -> EvmSim:
    sim = EvmSim(signer_address=SIGNER.address)
    sim.mint(SIGNER.address, 100 * ICY)
    sim.mine_block()
    return sim


@pytest.fixture
async def client(sim: EvmSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as c:
        yield c


def authorise(sim: EvmSim, key: Any, icy: int, btc_address: str, btc: int, nonce: int, deadline: int) -> bytes:
    domain = {"name": "ICY BTC SWAP", "version": "1", "chainId": sim.chain_id, "verifyingContract": sim.swap_address}
    message = {"icyAmount": icy, "btcAddress": btc_address, "btcAmount": btc, "nonce": nonce, "deadline": deadline}
    return bytes(key.sign_message(encode_typed_data(domain, TYPES, message)).signature)


def signed_swap(sim: EvmSim, sender: Any, tx_nonce: int, authoriser: Any = SIGNER, deadline: int = 0) -> str:
    deadline = deadline or int(time.time()) + 600
    sig = authorise(sim, authoriser, 5 * ICY, "tb1qdestination", 12_000, 77, deadline)
    tx = {
        "type": 2,
        "chainId": sim.chain_id,
        "nonce": tx_nonce,
        "to": sim.swap_address,
        "value": 0,
        "gas": 200_000,
        "maxFeePerGas": 10**9,
        "maxPriorityFeePerGas": 10**6,
        "data": swap_calldata(5 * ICY, "tb1qdestination", 12_000, 77, deadline, sig),
    }
    return "0x" + bytes(sender.sign_transaction(tx).raw_transaction).hex()


async def rpc(client: httpx.AsyncClient, method: str, *params: Any) -> dict[str, Any]:
    r = await client.post("/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    return dict(r.json())


async def test_valid_swap_moves_icy_and_emits_swap(sim: EvmSim, client: httpx.AsyncClient) -> None:
    nonce = int((await rpc(client, "eth_getTransactionCount", SIGNER.address, "pending"))["result"], 16)
    raw = signed_swap(sim, SIGNER, nonce)
    tx_hash = (await rpc(client, "eth_sendRawTransaction", raw))["result"]
    assert (await rpc(client, "eth_getTransactionReceipt", tx_hash))["result"] is None
    sim.mine_block()
    receipt = (await rpc(client, "eth_getTransactionReceipt", tx_hash))["result"]
    assert receipt["status"] == "0x1"
    swap_logs = [log for log in receipt["logs"] if log["topics"][0] == SWAP_TOPIC]
    assert decode_swap_data(swap_logs[0]["data"]) == (5 * ICY, "tb1qdestination", 12_000)
    assert sim.balance_of(SIGNER.address) == 95 * ICY
    assert sim.balance_of(sim.swap_address) == 5 * ICY
    tx = (await rpc(client, "eth_getTransactionByHash", tx_hash))["result"]
    assert tx["from"] == SIGNER.address.lower()
    # Re-sending the same signed bytes never swaps twice.
    again = await rpc(client, "eth_sendRawTransaction", raw)
    assert again["error"]["message"] == "nonce too low"


async def test_bad_authorisation_reverts(sim: EvmSim, client: httpx.AsyncClient) -> None:
    raw = signed_swap(sim, SIGNER, 0, authoriser=USER)
    tx_hash = (await rpc(client, "eth_sendRawTransaction", raw))["result"]
    sim.mine_block()
    receipt = (await rpc(client, "eth_getTransactionReceipt", tx_hash))["result"]
    assert receipt["status"] == "0x0"
    assert receipt["logs"] == []
    assert sim.balance_of(SIGNER.address) == 100 * ICY
    expired = signed_swap(sim, SIGNER, 1, deadline=1000)
    tx_hash = (await rpc(client, "eth_sendRawTransaction", expired))["result"]
    sim.mine_block()
    assert (await rpc(client, "eth_getTransactionReceipt", tx_hash))["result"]["status"] == "0x0"


async def test_nonce_and_chain_checks(sim: EvmSim, client: httpx.AsyncClient) -> None:
    assert (
        "nonce too high"
        in (await rpc(client, "eth_sendRawTransaction", signed_swap(sim, SIGNER, 5)))["error"]["message"]
    )
    sim.set_chain_id(8453)
    raw = signed_swap(sim, SIGNER, 0)
    sim.set_chain_id(84532)
    assert "chain id" in (await rpc(client, "eth_sendRawTransaction", raw))["error"]["message"]
    assert (await rpc(client, "eth_sendRawTransaction", "0xzz"))["error"]["code"] == -32602
