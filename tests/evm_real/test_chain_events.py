"""What a real chain does to the swap indexer, on anvil: two identical Swap events in one transaction (the
batching contract), and a reorg (``anvil_reorg``) that re-includes a Swap in a later block with a new hash."""

from __future__ import annotations

import pytest
from eth_utils.crypto import keccak

from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps
from icy_backend.sim import anvil
from tests.evm_real.conftest import ICY, AnvilWorld
from tests.evm_real.test_end_to_end import confirmed_payments, index_swaps, pay_out, rows, signature
from tests.icy_backend.money.conftest import recipient

pytestmark = pytest.mark.anyio


def reorgs(world: AnvilWorld) -> float:
    value = world.metrics.registry.get_sample_value("icy_backend_indexer_reorgs_total", {"chain": "icy_swap"})
    return value or 0.0


async def test_two_identical_swaps_in_one_transaction_are_paid_twice(anvil_world: AnvilWorld) -> None:
    """The batcher's two swaps (same amounts and address, different nonces) emit byte-identical Swap logs in
    one transaction: two rows, two payouts (event index 0 and 1), two payments."""
    chain = anvil_world.chain
    address = recipient(11)
    calls = [await signature(anvil_world, 200 * ICY, address, 20_000) for _ in range(2)]
    receipt = chain.user.send(chain.stack.batcher, anvil.batch_call(calls), gas=1_000_000)
    assert receipt["status"] == "0x1"
    swap_logs = [log for log in receipt["logs"] if log["address"].lower() == chain.stack.swap.lower()]
    assert len(swap_logs) == 2 and swap_logs[0]["data"] == swap_logs[1]["data"]  # identical events
    tx_hash = str(receipt["transactionHash"]).lower()

    await index_swaps(anvil_world)
    await index_swaps(anvil_world)
    stored = await rows(anvil_world, swaps)
    assert [(s["transaction_hash"], s["btc_amount"]) for s in stored] == [(tx_hash, 20_000)] * 2
    made = sorted(
        (p["swap_transaction_hash"], p["swap_event_index"], p["total"]) for p in await rows(anvil_world, payouts)
    )
    assert made == [(tx_hash, 0, 17_000), (tx_hash, 1, 17_000)]

    await pay_out(anvil_world)
    assert {p["status"] for p in await rows(anvil_world, payouts)} == {"completed"}
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [17_000, 17_000]


async def _mined_swap(world: AnvilWorld, address: str) -> tuple[str, int, str]:
    """A user's swap mined and indexed; returns ``(tx_hash, block, block_hash)`` before any reorg."""
    chain = world.chain
    args = await signature(world, 300 * ICY, address, 30_000)
    raw, tx_hash = chain.user.sign(chain.stack.swap, anvil.swap_call(*args), gas=400_000)
    chain.rpc.call("eth_sendRawTransaction", raw)
    receipt = anvil.wait_receipt(chain.rpc, tx_hash)
    assert receipt["status"] == "0x1"
    return raw, int(receipt["blockNumber"], 16), str(receipt["blockHash"]).lower()


async def test_reorg_that_reincludes_a_swap_keeps_one_row_and_one_payout(anvil_world: AnvilWorld) -> None:
    chain = anvil_world.chain
    address = recipient(12)
    raw, block, old_hash = await _mined_swap(anvil_world, address)
    await index_swaps(anvil_world)  # mines one block: the swap's block is 1 deep
    [before] = await rows(anvil_world, swaps)
    assert (before["block_number"], before["block_hash"]) == (block, old_hash)
    assert len(await rows(anvil_world, payouts)) == 1
    base = reorgs(anvil_world)

    # Depth 2: the swap's block and the one after it are replaced; the same signed transaction is mined again,
    # one block later, under a new block hash.
    chain.rpc.call("anvil_reorg", 2, [[raw, 1]])
    tx_hash = "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    receipt = chain.rpc.call("eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1"
    assert int(receipt["blockNumber"], 16) == block + 1
    new_hash = str(receipt["blockHash"]).lower()
    assert new_hash != old_hash

    await index_swaps(anvil_world)
    await index_swaps(anvil_world)
    assert reorgs(anvil_world) > base
    [after] = await rows(anvil_world, swaps)
    assert (after["transaction_hash"], after["block_number"], after["block_hash"]) == (tx_hash, block + 1, new_hash)
    [payout] = await rows(anvil_world, payouts)
    assert (payout["swap_transaction_hash"], payout["swap_event_index"], payout["total"]) == (tx_hash, 0, 27_000)
    await pay_out(anvil_world)
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [27_000]


async def test_reorg_after_the_payout_was_paid_never_pays_again(anvil_world: AnvilWorld) -> None:
    """The payout was already sent when the reorg came: it is kept (flagged, then re-attached when the same
    event re-appears) — one payout row, one payment."""
    chain = anvil_world.chain
    address = recipient(13)
    raw, _, _ = await _mined_swap(anvil_world, address)
    await index_swaps(anvil_world)
    await pay_out(anvil_world)
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [27_000]
    base = reorgs(anvil_world)

    chain.rpc.call("anvil_reorg", 2, [[raw, 1]])
    await index_swaps(anvil_world)
    await index_swaps(anvil_world)
    await pay_out(anvil_world)
    assert reorgs(anvil_world) > base
    assert len(await rows(anvil_world, swaps)) == 1
    [payout] = await rows(anvil_world, payouts)
    assert payout["status"] == "completed"
    assert payout["reorged"] is False  # the event re-appeared: the flag cleared
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [27_000]
