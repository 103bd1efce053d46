"""Every signature of ``POST /api/v1/swap/generate-signature`` is accepted by the Solidity swap contract on
anvil, for random fair pairs over the four address types of the network; a replay and a tampered amount revert.

Fast: the transactions of a round are sent in one JSON-RPC batch and mined together (automine off).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from embit import ec
from embit.networks import NETWORKS
from embit.script import Script, p2pkh, p2sh, p2tr, p2wpkh
from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

from icy_backend.domain.btc_address import parse_address
from icy_backend.domain.fees import service_fee
from icy_backend.routes.swap import routes
from icy_backend.sim import anvil
from tests.evm_real.conftest import ICY, RATIO, AnvilWorld, Chain

pytestmark = pytest.mark.anyio

PAIRS = 240  # ≥ 200 signatures, 60 per address type
SEED = 15
GAS = 250_000
SwapArgs = tuple[int, str, int, int, int, bytes]

ADDRESS_TYPES: dict[str, Callable[[ec.PublicKey], Script]] = {
    "p2wpkh": p2wpkh,
    "p2tr": p2tr,
    "p2pkh": p2pkh,
    "p2sh": lambda pub: p2sh(p2wpkh(pub)),
}


def random_address(rng: random.Random, kind: str) -> str:
    key = ec.PrivateKey(rng.randbytes(32))
    return str(ADDRESS_TYPES[kind](key.get_public_key()).address(NETWORKS["test"]))


def fair_pair(rng: random.Random, address: str, fee_rate: Any, min_fee: int) -> tuple[int, int]:
    """A random ``(icy_wei, sats)`` the service must sign: within 1 % of the value and payable above dust."""
    dust = parse_address(address, "testnet").dust_limit
    while True:
        icy = rng.randint(40 * ICY, 2_000 * ICY)
        most = icy * 101 // (RATIO * 100 * 100)  # the 1 % tolerance, floored (the edge itself is allowed)
        sats = rng.choice([most, icy // (RATIO * 100), rng.randint(most * 9 // 10, most)])
        if sats - service_fee(sats, fee_rate, min_fee) >= dust:
            return icy, sats


def mine_all(chain: Chain, hashes: list[str], max_blocks: int = 50) -> list[dict[str, Any]]:
    """Mine blocks until every transaction has a receipt; the receipts in order."""
    receipts: list[Any] = [None] * len(hashes)
    for _ in range(max_blocks):
        chain.rpc.call("evm_mine")
        todo = [i for i, r in enumerate(receipts) if r is None]
        answers = chain.rpc.batch([("eth_getTransactionReceipt", [hashes[i]]) for i in todo])
        for i, answer in zip(todo, answers, strict=True):
            assert not isinstance(answer, anvil.RpcFailure), answer
            receipts[i] = answer
        if all(r is not None for r in receipts):
            return receipts
    raise AssertionError("transactions still unmined after 50 blocks")


def send_round(chain: Chain, calls: list[SwapArgs]) -> list[dict[str, Any]]:
    """Send every ``swap(...)`` from the user in one JSON-RPC batch and mine them; their receipts."""
    signed = [chain.user.sign(chain.stack.swap, anvil.swap_call(*args), gas=GAS) for args in calls]
    answers = chain.rpc.batch([("eth_sendRawTransaction", [raw]) for raw, _ in signed])
    assert [a for a in answers if isinstance(a, anvil.RpcFailure)] == []
    return mine_all(chain, [tx_hash for _, tx_hash in signed])


def reverts_with(chain: Chain, calls: list[SwapArgs]) -> list[str | None]:
    """The custom error each call would revert with now (None: it would succeed), in one batch of eth_call."""
    answers = chain.rpc.batch(
        [
            (
                "eth_call",
                [{"from": chain.user.address, "to": chain.stack.swap, "data": "0x" + anvil.swap_call(*a).hex()}],
            )
            for a in calls
        ]
    )
    return [a.data if isinstance(a, anvil.RpcFailure) else None for a in answers]


async def test_every_signature_of_the_route_is_accepted_by_the_contract(anvil_world: AnvilWorld) -> None:
    chain = anvil_world.chain
    settings = anvil_world.settings
    assert await anvil_world.oracle.icy_btc_ratio() == RATIO
    rng = random.Random(SEED)
    kinds = list(ADDRESS_TYPES) * (PAIRS // len(ADDRESS_TYPES))
    rng.shuffle(kinds)
    started = time.monotonic()

    signed: list[SwapArgs] = []
    async with anvil_world.api(routes) as client:
        for kind in kinds:
            address = random_address(rng, kind)
            icy, sats = fair_pair(rng, address, settings.BTC_SERVICE_FEE_PERCENTAGE, settings.BTC_MIN_SATOSHI_FEE)
            answer = await client.post(
                "/api/v1/swap/generate-signature",
                json={"icy_amount": str(icy), "btc_address": address, "btc_amount": str(sats)},
            )
            assert answer.status_code == 200, (kind, answer.text)
            data = answer.json()["data"]
            assert (data["icy_amount"], data["btc_amount"]) == (str(icy), str(sats))
            signed.append(
                (icy, address, sats, int(data["nonce"]), int(data["deadline"]), bytes.fromhex(data["signature"]))
            )
    assert len(signed) >= 200
    assert {str(parse_address(a[1], "testnet").type) for a in signed} == {"p2wpkh", "p2tr", "p2pkh", "p2sh"}

    chain.rpc.call("evm_setAutomine", False)
    receipts = send_round(chain, signed)
    refused = [(args[1], r["status"]) for args, r in zip(signed, receipts, strict=True) if r["status"] != "0x1"]
    assert refused == [], refused

    # The contract emitted one Swap per signature, with the signed values, and holds the ICY.
    swap_topic = "0x" + keccak(text="Swap(uint256,string,uint256)").hex()
    emitted = [
        abi_decode(["uint256", "string", "uint256"], bytes.fromhex(log["data"][2:]))
        for r in receipts
        for log in r["logs"]
        if log["address"].lower() == chain.stack.swap.lower() and log["topics"] == [swap_topic]
    ]
    assert emitted == [(icy, address, sats) for icy, address, sats, *_ in signed]
    balance = anvil.calldata("balanceOf(address)", ["address"], [chain.stack.swap])
    held = chain.rpc.call("eth_call", {"to": chain.stack.icy, "data": "0x" + balance.hex()}, "latest")
    assert int(held, 16) == sum(a[0] for a in signed)

    # Replays: every one reverts with DigestAlreadyUsed, and mined they fail.
    assert set(reverts_with(chain, signed)) == {anvil.error_selector("DigestAlreadyUsed()")}
    assert {r["status"] for r in send_round(chain, signed)} == {"0x0"}

    # Tampered amounts (one sat more than signed): the signature no longer recovers to the signer.
    tampered = [(icy, address, sats + 1, nonce, deadline, sig) for icy, address, sats, nonce, deadline, sig in signed]
    assert set(reverts_with(chain, tampered)) == {anvil.error_selector("WrongSigner()")}
    assert {r["status"] for r in send_round(chain, tampered)} == {"0x0"}
    assert int(chain.rpc.call("eth_call", {"to": chain.stack.icy, "data": "0x" + balance.hex()}, "latest"), 16) == sum(
        a[0] for a in signed
    )
    elapsed = time.monotonic() - started
    print(f"\n{len(signed)} signatures checked on anvil (accepted, replayed, tampered) in {elapsed:.1f} s")
