"""End to end on a real EVM: a user approves and calls the Solidity contract's ``swap(...)`` with the service's
signature; the service's swap indexer reads the Swap event from anvil, stores it, creates one payout, and the
payout job pays it on the Esplora simulator — once."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from sqlalchemy import select

from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps
from icy_backend.db.tables import swap_requests
from icy_backend.domain.signature import SwapSigner
from icy_backend.routes.swap import routes
from icy_backend.sim import anvil
from jobs.context import JobContext
from jobs.indexers import make_icy_indexer, make_swap_indexer
from jobs.payouts import make_payout_job
from jobs.swap_requests import make_swap_request_job
from tests.evm_real.conftest import CHAIN_ID, ICY, AnvilWorld, Chain
from tests.icy_backend.money.conftest import SIGNER_KEY, recipient

pytestmark = pytest.mark.anyio


def fund_user(chain: Chain, index: int, icy: int) -> anvil.Wallet:
    """A fresh dev account holding ``icy`` (moved from the main user: the supply, so the ratio, is unchanged)."""
    wallet = anvil.Wallet(chain.rpc, anvil.dev_key(index), CHAIN_ID)
    data = anvil.calldata("transfer(address,uint256)", ["address", "uint256"], [wallet.address, icy])
    assert chain.user.send(chain.stack.icy, data)["status"] == "0x1"
    return wallet


async def signature(world: AnvilWorld, icy: int, address: str, sats: int) -> tuple[int, str, int, int, int, bytes]:
    async with world.api(routes) as client:
        answer = await client.post(
            "/api/v1/swap/generate-signature",
            json={"icy_amount": str(icy), "btc_address": address, "btc_amount": str(sats)},
        )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    return icy, address, sats, int(data["nonce"]), int(data["deadline"]), bytes.fromhex(data["signature"])


async def index_swaps(world: AnvilWorld) -> JobContext:
    # BLOCKCHAIN_CONFIRMATIONS=1 (the minimum): one more block puts the swap's block in range.
    world.chain.rpc.call("evm_mine")
    ctx = JobContext("icy_swap_transaction_indexing")
    await make_swap_indexer(world.engine, world.clients, world.settings, world.metrics, world.oracle.pricing_ratio)(
        ctx
    )  # as the app wires it
    return ctx


async def pay_out(world: AnvilWorld, runs: int = 4) -> None:
    """Run the payout job a few times, mining a Bitcoin block after each run (broadcast, then confirm)."""
    job = make_payout_job(world.engine, world.clients, world.settings, world.metrics)
    for _ in range(runs):
        await job(JobContext("btc_pending_transaction_processing"))
        world.btc.esplora_sim.mine()


def confirmed_payments(world: AnvilWorld, address: str) -> list[dict[str, Any]]:
    """The simulator's payments to ``address`` that count as paid (``confirmed`` where it reports a status)."""
    return [p for p in world.btc.paid_to(address) if p.get("status", "confirmed") == "confirmed"]


async def rows(world: AnvilWorld, table: Any) -> list[dict[str, Any]]:
    async with world.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings().all()]


async def test_user_swap_on_anvil_is_indexed_and_paid_once(anvil_world: AnvilWorld) -> None:
    chain = anvil_world.chain
    user = fund_user(chain, 2, 1_000 * ICY)
    anvil.approve(user, chain.stack.icy, chain.stack.swap, 500 * ICY)
    address = recipient(7)
    # 500 ICY at 100 sats each: 50 000 sats; fee max(500, 3000) = 3000; 47 000 paid.
    args = await signature(anvil_world, 500 * ICY, address, 50_000)
    receipt = user.send(chain.stack.swap, anvil.swap_call(*args), gas=400_000)
    assert receipt["status"] == "0x1"
    tx_hash = str(receipt["transactionHash"]).lower()

    ctx = await index_swaps(anvil_world)
    assert ctx.items_succeeded == 1
    await index_swaps(anvil_world)  # a re-run stores nothing twice
    [swap] = await rows(anvil_world, swaps)
    assert (swap["transaction_hash"], swap["icy_amount"], swap["btc_address"], swap["btc_amount"]) == (
        tx_hash,
        500 * ICY,
        address,
        50_000,
    )
    assert swap["from_address"] == to_checksum_address(user.address)
    assert swap["block_number"] == int(receipt["blockNumber"], 16)
    [payout] = await rows(anvil_world, payouts)
    assert (payout["swap_transaction_hash"], payout["subtotal"], payout["service_fee"], payout["total"]) == (
        tx_hash,
        50_000,
        3_000,
        47_000,
    )

    await pay_out(anvil_world)
    [payout] = await rows(anvil_world, payouts)
    assert payout["status"] == "completed"
    paid = confirmed_payments(anvil_world, address)
    assert [p["value"] for p in paid] == [47_000]
    assert paid[0]["txid"] == payout["btc_transaction_hash"]
    # Running everything again changes nothing.
    await index_swaps(anvil_world)
    await pay_out(anvil_world, runs=2)
    assert len(await rows(anvil_world, payouts)) == 1
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [47_000]


async def test_a_reverted_swap_creates_nothing(anvil_world: AnvilWorld) -> None:
    """A tampered call reverts on-chain: no Swap event, so no row and no payout (the contract is the judge)."""
    chain = anvil_world.chain
    icy, address, sats, nonce, deadline, sig = await signature(anvil_world, 500 * ICY, recipient(8), 50_000)
    receipt = chain.user.send(chain.stack.swap, anvil.swap_call(icy, address, sats * 2, nonce, deadline, sig))
    assert receipt["status"] == "0x0"
    await index_swaps(anvil_world)
    assert await rows(anvil_world, swaps) == []
    assert await rows(anvil_world, payouts) == []


async def request_swap(world: AnvilWorld, icy: int, address: str) -> str:
    """A user sends ``icy`` to the signer wallet on anvil and asks the service to swap it; the ICY tx hash."""
    chain = world.chain
    user = fund_user(chain, 3, icy)
    data = anvil.calldata("transfer(address,uint256)", ["address", "uint256"], [chain.signer.address, icy])
    receipt = user.send(chain.stack.icy, data)
    assert receipt["status"] == "0x1"
    icy_tx = str(receipt["transactionHash"])
    async with world.api(routes) as client:
        answer = await client.post(
            "/api/v1/swap", json={"icy_amount": str(icy), "btc_address": address, "icy_tx": icy_tx}
        )
    assert answer.status_code == 200, answer.text
    chain.rpc.call("evm_mine")  # BLOCKCHAIN_CONFIRMATIONS=1 (the minimum): the transfer is one block deep
    await make_icy_indexer(world.engine, world.clients, world.settings, world.metrics)(JobContext("icy"))
    return icy_tx


async def test_swap_request_is_sent_by_the_signer_wallet_mined_by_anvil_and_paid_once(
    anvil_world: AnvilWorld,
) -> None:
    chain = anvil_world.chain
    # Operator set-up, once: the signer wallet lets the swap contract pull the ICY it receives.
    anvil.approve(chain.signer, chain.stack.icy, chain.stack.swap)
    signer_nonce = int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16)
    address = recipient(9)
    await request_swap(anvil_world, 300 * ICY, address)

    job = make_swap_request_job(
        anvil_world.engine, anvil_world.clients, anvil_world.settings, anvil_world.metrics, anvil_world.oracle
    )
    ctx = JobContext("swap_request_processing")
    await job(ctx)
    [request] = await rows(anvil_world, swap_requests)
    assert request["status"] == "sending", request
    assert request["btc_amount"] == 30_000  # 300 ICY at 100 sats each
    tx_hash = str(request["evm_tx_hash"])
    # anvil automines: the transaction is in a block already; it is the node's own view that is checked.
    tx = chain.rpc.call("eth_getTransactionByHash", tx_hash)
    receipt = chain.rpc.call("eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1"
    assert tx["type"] == "0x2"  # EIP-1559
    assert tx["from"].lower() == chain.signer.address.lower()
    assert tx["to"].lower() == chain.stack.swap.lower()
    assert int(tx["nonce"], 16) == signer_nonce
    # The gas limit is the node's own estimate (at the parent block) plus 20 % headroom.
    call = {"from": tx["from"], "to": tx["to"], "data": tx["input"]}
    parent = hex(int(receipt["blockNumber"], 16) - 1)
    estimate = int(chain.rpc.call("eth_estimateGas", call, parent), 16)
    assert int(tx["gas"], 16) == estimate * 12 // 10
    assert int(tx["maxFeePerGas"], 16) >= int(tx["maxPriorityFeePerGas"], 16)

    await job(JobContext("swap_request_processing"))
    [request] = await rows(anvil_world, swap_requests)
    assert request["status"] == "completed"
    assert int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16) == signer_nonce + 1

    await index_swaps(anvil_world)
    [payout] = await rows(anvil_world, payouts)
    assert (payout["swap_transaction_hash"], payout["subtotal"], payout["total"]) == (tx_hash, 30_000, 27_000)
    await pay_out(anvil_world)
    assert [p["value"] for p in confirmed_payments(anvil_world, address)] == [27_000]
    # Nothing more is sent, whatever runs again.
    await job(JobContext("swap_request_processing"))
    assert int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16) == signer_nonce + 1


async def test_without_the_signer_allowance_the_request_waits_and_sends_nothing(anvil_world: AnvilWorld) -> None:
    """A real EVM refuses transferFrom without allowance: the node's gas estimate reverts, the request stays
    pending with a reason, and no transaction leaves the signer wallet (no approve is sent either)."""
    chain = anvil_world.chain
    await request_swap(anvil_world, 300 * ICY, recipient(10))
    job = make_swap_request_job(
        anvil_world.engine, anvil_world.clients, anvil_world.settings, anvil_world.metrics, anvil_world.oracle
    )
    ctx = JobContext("swap_request_processing")
    await job(ctx)
    [request] = await rows(anvil_world, swap_requests)
    assert (request["status"], request["failure_reason"]) == ("pending", "estimate_reverted")
    assert ctx.items_failed == 1
    assert int(chain.rpc.call("eth_getTransactionCount", chain.signer.address, "latest"), 16) == 0


async def test_a_signature_used_after_its_deadline_is_refused_on_chain(anvil_world: AnvilWorld) -> None:
    """The route's deadline (now + 10 min) is what the contract enforces: 11 minutes later the swap reverts."""
    chain = anvil_world.chain
    args = await signature(anvil_world, 500 * ICY, recipient(17), 50_000)
    chain.rpc.call("evm_increaseTime", 660)
    call = {"from": chain.user.address, "to": chain.stack.swap, "data": "0x" + anvil.swap_call(*args).hex()}
    chain.rpc.call("evm_mine")
    with pytest.raises(anvil.RpcFailure) as refused:
        chain.rpc.call("eth_call", call, "latest")
    assert refused.value.data == anvil.error_selector("DeadlinePassed()")
    assert chain.user.send(chain.stack.swap, anvil.swap_call(*args), gas=400_000)["status"] == "0x0"
    await index_swaps(anvil_world)
    assert await rows(anvil_world, payouts) == []


async def test_an_overpriced_swap_signed_with_a_leaked_key_is_held_not_paid(anvil_world: AnvilWorld) -> None:
    """The contract accepts anything the signer key signed; a Swap worth far more BTC than its ICY (a leaked key)
    becomes a held payout (price_outlier) that pays nothing until a person decides."""
    chain = anvil_world.chain
    address = recipient(18)
    leaked = SwapSigner(SIGNER_KEY, CHAIN_ID, chain.stack.swap)
    auth = leaked.sign(10 * ICY, address, 500_000)  # 10 ICY are worth 1 000 sats
    call = anvil.swap_call(auth.icy_amount, address, auth.btc_amount, auth.nonce, auth.deadline, auth.signature_bytes)
    assert chain.user.send(chain.stack.swap, call, gas=400_000)["status"] == "0x1"
    await index_swaps(anvil_world)
    [payout] = await rows(anvil_world, payouts)
    assert (payout["status"], payout["hold_reason"]) == ("held", "price_outlier")
    await pay_out(anvil_world)
    assert confirmed_payments(anvil_world, address) == []
    assert [p["status"] for p in await rows(anvil_world, payouts)] == ["held"]
