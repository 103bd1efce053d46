"""A swap request whose ``swap(...)`` transaction sits unmined in anvil's pool as its signature deadline nears:
the service replaces it at the same nonce (fresh signature, fees raised ≥ 10 %), the real node's pool accepts the
replacement and drops the first, and the request is swapped — and paid — exactly once."""

from __future__ import annotations

import time

import pytest

from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import swap_requests
from icy_backend.domain.swap_requests import REPLACE_BEFORE_DEADLINE, SwapRequestProcessor
from icy_backend.sim import anvil
from tests.evm_real.conftest import ICY, AnvilWorld
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
