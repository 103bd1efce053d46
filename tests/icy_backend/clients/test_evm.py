"""EvmRpcClient against the EVM simulator: every helper, batches, typed errors, probe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from eth_abi.abi import decode

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import InvalidResponse, JsonRpcError
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.metrics import Metrics
from icy_backend.sim import abi
from icy_backend.sim.combined import PrefixRouter
from icy_backend.sim.evm import EvmSim
from icy_backend.sim.evm_chain import sim_address
from icy_backend.sim.faults import Fault
from tests.icy_backend.clients.conftest import calls, duration_count

pytestmark = pytest.mark.anyio

API = "base_rpc"
ALICE = sim_address("alice")
BOB = sim_address("bob")


@pytest.fixture
def sim() -> EvmSim:
    chain = EvmSim(chain_id=84532)
    chain.mint(ALICE, 10 * 10**18)
    chain.mine_block()
    return chain


@pytest.fixture
async def evm(sim: EvmSim, breakers: Breakers, metrics: Metrics) -> AsyncIterator[EvmRpcClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        yield EvmRpcClient(http, ["http://sim"], breakers, metrics, deadline=2.0)


async def test_chain_reads(sim: EvmSim, evm: EvmRpcClient, metrics: Metrics) -> None:
    assert await evm.chain_id() == 84532
    assert await evm.net_version() == 84532
    assert await evm.block_number() == sim.head
    assert await evm.total_supply(sim.icy_address) == 10 * 10**18
    assert await evm.balance_of(sim.icy_address, ALICE) == 10 * 10**18
    assert await evm.balance_of(sim.icy_address, BOB) == 0
    raw = await evm.call(sim.icy_address, bytes.fromhex(abi.SEL_DECIMALS[2:]))
    assert decode(["uint256"], raw) == (18,)
    assert duration_count(metrics, API, "eth_call", "success") == 4  # total_supply, balance_of x2, call
    assert calls(metrics, API, "success") == 7


async def test_logs_receipts_transactions_blocks(sim: EvmSim, evm: EvmRpcClient) -> None:
    tx_hash = sim.transfer(ALICE, BOB, 3 * 10**18)
    swap_hash = sim.emit_swap(10**18, "tb1qexample", 5_000, ALICE)
    number = sim.mine_block()
    transfers = await evm.get_logs(sim.icy_address, [abi.TRANSFER_TOPIC], 0, number)
    mine = next(log for log in transfers if log.transaction_hash == tx_hash)
    assert mine.block_number == number
    assert mine.topics[0] == abi.TRANSFER_TOPIC
    assert int.from_bytes(mine.data, "big") == 3 * 10**18
    assert mine.address == sim.icy_address.lower()
    swaps = await evm.get_logs(sim.swap_address, [abi.SWAP_TOPIC], number, "latest")
    assert len(swaps) == 1
    assert decode(["uint256", "string", "uint256"], swaps[0].data) == (10**18, "tb1qexample", 5_000)

    receipt = await evm.transaction_receipt(swap_hash)
    assert receipt is not None
    assert receipt.block_number == number
    assert receipt.status == 1
    assert any(log.topics[0] == abi.SWAP_TOPIC for log in receipt.logs)
    tx = await evm.transaction_by_hash(tx_hash)
    assert tx is not None
    assert tx.block_number == number
    assert tx.from_address == ALICE.lower()
    assert await evm.transaction_receipt("0x" + "ab" * 32) is None
    assert await evm.transaction_by_hash("0x" + "ab" * 32) is None

    block = await evm.block_by_number(number)
    assert block is not None
    assert block.number == number
    assert block.timestamp > 0
    latest = await evm.block_by_number("latest")
    assert latest is not None
    assert latest.number == number
    assert latest.base_fee_per_gas is not None


async def test_send_path_helpers(sim: EvmSim, evm: EvmRpcClient) -> None:
    assert await evm.transaction_count(ALICE, "pending") >= 0
    assert await evm.max_priority_fee_per_gas() > 0
    assert await evm.estimate_gas({"from": ALICE, "to": sim.icy_address, "data": "0x"}) > 0


async def test_send_raw_transaction_error_is_an_answer(evm: EvmRpcClient, breakers: Breakers) -> None:
    for _ in range(5):
        with pytest.raises(JsonRpcError):
            await evm.send_raw_transaction(b"\x02\x00")
    assert breakers.state(API) == "closed"


async def test_batch_and_request(sim: EvmSim, evm: EvmRpcClient) -> None:
    chain_id, head = await evm.batch([("eth_chainId", []), ("eth_blockNumber", [])])
    assert int(chain_id, 16) == 84532
    assert int(head, 16) == sim.head
    assert len(await evm.batch([])) == 0
    assert await evm.request("net_version") == "84532"
    with pytest.raises(JsonRpcError) as info:
        await evm.batch([("eth_chainId", []), ("no_such_method", [])])
    assert info.value.code == -32601


async def test_revert_and_range_errors_are_answers(sim: EvmSim, evm: EvmRpcClient, breakers: Breakers) -> None:
    sim.set_log_range_limit(10)
    for _ in range(5):
        with pytest.raises(JsonRpcError) as info:
            await evm.get_logs(sim.icy_address, [], 0, 1_000)
        assert info.value.is_range_too_large
        with pytest.raises(JsonRpcError) as revert:
            await evm.call(sim.icy_address, b"\xde\xad\xbe\xef")
        assert revert.value.is_revert
    assert breakers.state(API) == "closed"


async def test_malformed_answer_is_a_failure(sim: EvmSim, evm: EvmRpcClient, breakers: Breakers) -> None:
    sim.faults.set(Fault(path="eth_blockNumber", malformed=True))
    for _ in range(2):
        with pytest.raises(InvalidResponse):
            await evm.block_number()
    assert await evm.chain_id() == 84532  # other methods unaffected
    assert breakers.state(API) == "closed"
    for _ in range(3):  # threshold 3 consecutive failures
        with pytest.raises(InvalidResponse):
            await evm.block_number()
    assert breakers.state(API) == "open"


async def test_probe(sim: EvmSim, evm: EvmRpcClient, breakers: Breakers, metrics: Metrics) -> None:
    assert await evm.probe() == (84532, sim.head)
    sim.faults.set(Fault(path="*", status=500))
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017
            await evm.probe()
    assert breakers.state(API) == "closed"
    assert calls(metrics, API, "error") == 0


async def test_batch_is_answered_by_one_endpoint_and_fails_over_whole(breakers: Breakers, metrics: Metrics) -> None:
    """Two nodes that disagree: every result of a batch comes from the same one, also after a failover."""
    primary, secondary = EvmSim(chain_id=84532), EvmSim(chain_id=84532)
    primary.mine_empty(20)
    secondary.mine_empty(5)
    primary.faults.set(Fault(path="eth_getLogs", status=500))  # refuses only batches holding eth_getLogs
    nodes = PrefixRouter({"/a": primary.app, "/b": secondary.app})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=nodes)) as http:
        evm = EvmRpcClient(http, ["http://sim/a", "http://sim/b"], breakers, metrics, deadline=2.0)
        plain = await evm.batch([("eth_blockNumber", []), ("eth_getBlockByNumber", ["0x14", False])])
        assert plain.endpoint == 0
        assert int(plain[0], 16) == 20
        assert plain[1] is not None
        query = {"address": primary.icy_address, "fromBlock": "0x0", "toBlock": "0x14"}
        calls_: list[tuple[str, list[Any]]] = [
            ("eth_blockNumber", []),
            ("eth_getLogs", [query]),
            ("eth_getBlockByNumber", ["0x14", False]),
        ]
        moved = await evm.batch(calls_, op="eth_getLogs")
        assert moved.endpoint == 1
        # the head, the logs and the (missing) header are the secondary's: never a mix of the two nodes
        assert int(moved[0], 16) == 5
        assert moved[1] == []
        assert moved[2] is None
        assert duration_count(metrics, API, "eth_getLogs", "success") == 1
        assert calls(metrics, API, "success") == 2


async def test_batch_answer_error_is_not_failed_over(sim: EvmSim, evm: EvmRpcClient, breakers: Breakers) -> None:
    sim.set_log_range_limit(10)
    query = {"address": sim.icy_address, "fromBlock": "0x0", "toBlock": "0x3e8"}
    for _ in range(4):
        with pytest.raises(JsonRpcError) as info:
            await evm.batch([("eth_blockNumber", []), ("eth_getLogs", [query])])
        assert info.value.is_range_too_large
    assert breakers.state(API) == "closed"
