"""Swap requests against a real node's transaction pool (anvil, automine off), each swapped exactly once:

* an unmined transaction as its signature deadline nears is replaced at the same nonce (fresh signature, fees
  raised ≥ 10 %); the pool accepts the replacement and drops the first;
* a transaction the node dropped (evicted) is sent again, the very same bytes;
* a transaction the node dropped whose nonce another transaction of the signer wallet then used can never be
  mined: the request goes back to pending and gets a new transaction.
"""

from __future__ import annotations

import time

import pytest

from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import swap_requests
from icy_backend.domain.swap_requests import REPLACE_BEFORE_DEADLINE, SwapRequestProcessor
from icy_backend.sim import anvil
from tests.evm_real.conftest import ICY, AnvilWorld, Chain
from tests.evm_real.test_end_to_end import confirmed_payments, index_swaps, pay_out, request_swap, rows
from tests.icy_backend.money.conftest import recipient

pytestmark = pytest.mark.anyio


async def test_unmined_swap_is_replaced_at_the_same_nonce_and_swapped_once(anvil_world: AnvilWorld) -> None:
    chain = anvil_world.chain
    anvil.approve(chain.signer, chain.stack.icy, chain.stack.swap)  # operator set-up, once
    nonce = int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16)
    address = recipient(14)
    await request_swap(anvil_world, 300 * ICY, address)

    now = [time.time()]
    proc = SwapRequestProcessor(
        anvil_world.engine, anvil_world.clients.evm, anvil_world.oracle, anvil_world.settings, clock=lambda: now[0]
    )
    chain.rpc.call("evm_setAutomine", False)  # the node keeps our transaction pending
    await proc.run()
    [first] = await rows(anvil_world, swap_requests)
    assert first["status"] == "sending"
    tx1 = str(first["evm_tx_hash"])
    pending = chain.rpc.call("eth_getTransactionByHash", tx1)
    assert pending is not None and pending["blockNumber"] is None

    # Still early: the same bytes are re-sent, nothing is replaced.
    await proc.run()
    [row] = await rows(anvil_world, swap_requests)
    assert row["evm_tx_hash"] == tx1

    # Less than REPLACE_BEFORE_DEADLINE seconds left on the signature: replace at the same nonce.
    now[0] = int(first["signature_deadline"]) - REPLACE_BEFORE_DEADLINE + 10
    report = await proc.run()
    assert report.replaced == [first["id"]]
    [second] = await rows(anvil_world, swap_requests)
    tx2 = str(second["evm_tx_hash"])
    assert tx2 != tx1 and tx1 in str(second["replaced_tx_hashes"]).split()
    assert int(second["signature_deadline"]) > int(first["signature_deadline"])
    old, new = chain.rpc.call("eth_getTransactionByHash", tx1), chain.rpc.call("eth_getTransactionByHash", tx2)
    assert new is not None and int(new["nonce"], 16) == nonce
    for cap in ("maxFeePerGas", "maxPriorityFeePerGas"):
        assert int(new[cap], 16) * 10 >= int(pending[cap], 16) * 11, cap
    assert old is None  # the real pool dropped the replaced transaction

    chain.rpc.call("evm_mine")
    chain.rpc.call("evm_setAutomine", True)
    assert chain.rpc.call("eth_getTransactionReceipt", tx1) is None
    assert chain.rpc.call("eth_getTransactionReceipt", tx2)["status"] == "0x1"
    await proc.run()
    [done] = await rows(anvil_world, swap_requests)
    assert done["status"] == "completed"
    assert int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16) == nonce + 1

    await index_swaps(anvil_world)
    [payout] = await rows(anvil_world, payouts)
    assert (payout["swap_transaction_hash"], payout["total"]) == (tx2, 27_000)
    await pay_out(anvil_world)
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [27_000]
    await proc.run()  # nothing more leaves the signer wallet
    assert int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16) == nonce + 1


def signer_nonce(chain: Chain) -> int:
    return int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16)


async def _sending(world: AnvilWorld, address: str) -> tuple[SwapRequestProcessor, str, int]:
    """A request whose transaction the service has sent into the pool (automine off); ``(processor, tx hash,
    its nonce)``."""
    chain = world.chain
    anvil.approve(chain.signer, chain.stack.icy, chain.stack.swap)  # operator set-up, once
    await request_swap(world, 300 * ICY, address)
    proc = SwapRequestProcessor(world.engine, world.clients.evm, world.oracle, world.settings)
    chain.rpc.call("evm_setAutomine", False)
    await proc.run()
    [row] = await rows(world, swap_requests)
    assert row["status"] == "sending"
    tx_hash = str(row["evm_tx_hash"])
    pending = chain.rpc.call("eth_getTransactionByHash", tx_hash)
    assert pending["blockNumber"] is None
    assert int(pending["nonce"], 16) == signer_nonce(chain)
    return proc, tx_hash, int(pending["nonce"], 16)


async def test_a_dropped_transaction_is_sent_again_with_the_same_bytes(anvil_world: AnvilWorld) -> None:
    chain = anvil_world.chain
    address = recipient(15)
    proc, tx_hash, nonce = await _sending(anvil_world, address)
    chain.rpc.call("anvil_dropTransaction", tx_hash)  # evicted, as a node restart or expiry would
    assert chain.rpc.call("eth_getTransactionByHash", tx_hash) is None

    await proc.run()
    assert chain.rpc.call("eth_getTransactionByHash", tx_hash) is not None  # the same hash: the same bytes
    chain.rpc.call("evm_mine")
    chain.rpc.call("evm_setAutomine", True)
    await proc.run()
    [row] = await rows(anvil_world, swap_requests)
    assert (row["status"], row["evm_tx_hash"]) == ("completed", tx_hash)
    assert signer_nonce(chain) == nonce + 1
    await index_swaps(anvil_world)
    await pay_out(anvil_world)
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [27_000]


async def test_a_dropped_transaction_whose_nonce_was_used_elsewhere_is_rebuilt_once(anvil_world: AnvilWorld) -> None:
    chain = anvil_world.chain
    address = recipient(16)
    proc, tx1, nonce = await _sending(anvil_world, address)
    chain.rpc.call("anvil_dropTransaction", tx1)
    # Another transaction of the signer wallet (say, an operator's) takes that nonce and is mined.
    chain.signer.nonce = nonce
    raw, _ = chain.signer.sign(chain.signer.address, b"", gas=21_000)
    chain.rpc.call("eth_sendRawTransaction", raw)
    chain.rpc.call("evm_mine")
    assert signer_nonce(chain) == nonce + 1

    # Not deep enough yet (BLOCKCHAIN_CONFIRMATIONS=1 needs the nonce used a block below the head): waits.
    await proc.run()
    [row] = await rows(anvil_world, swap_requests)
    assert (row["status"], row["evm_tx_hash"]) == ("sending", tx1)
    chain.rpc.call("evm_mine")
    report = await proc.run()
    assert report.returned_to_pending == [row["id"]]
    # The same run (or the next) builds a new transaction at the next nonce.
    await proc.run()
    [row] = await rows(anvil_world, swap_requests)
    assert row["status"] == "sending" and row["evm_tx_hash"] != tx1
    tx2 = str(row["evm_tx_hash"])
    assert int(chain.rpc.call("eth_getTransactionByHash", tx2)["nonce"], 16) == nonce + 1
    chain.rpc.call("evm_mine")
    chain.rpc.call("evm_setAutomine", True)
    await proc.run()
    [row] = await rows(anvil_world, swap_requests)
    assert (row["status"], row["evm_tx_hash"]) == ("completed", tx2)
    assert chain.rpc.call("eth_getTransactionReceipt", tx1) is None
    await index_swaps(anvil_world)
    [payout] = await rows(anvil_world, payouts)
    assert payout["swap_transaction_hash"] == tx2
    await pay_out(anvil_world)
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [27_000]
