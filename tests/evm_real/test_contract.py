"""The EIP-712 swap authorisation against an independent judge: the issue's test vector, and the Solidity swap
contract (compiled by solc, run on anvil) refusing what it must refuse."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_utils.crypto import keccak

from icy_backend.domain.signature import SwapAuthorisation, SwapSigner
from icy_backend.sim import anvil
from tests.evm_real.conftest import CHAIN_ID, ICY, Chain
from tests.icy_backend.money.conftest import SIGNER_KEY

# Computed independently (issue 15): chainId 84532, this contract address, 100 ICY for 15 000 sats.
VECTOR_CONTRACT = "0x175c2ada4a0b1ac1cc9717f4e47b6868332bad76"
VECTOR_ADDRESS = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
VECTOR_ARGS = (100 * ICY, VECTOR_ADDRESS, 15000, 1, 1893456000)
VECTOR_DIGEST = "1d8234d962d24ef9318fc732543919a4c3e8d37323de451161736eecc711eb5e"
DIGEST_SIGNATURE = "swapDigest(uint256,string,uint256,uint256,uint256)"
DIGEST_TYPES = ("uint256", "string", "uint256", "uint256", "uint256")
SwapArgs = tuple[int, str, int, int, int, bytes]


def test_our_signing_code_reproduces_the_issue_vector() -> None:
    signer = SwapSigner(SIGNER_KEY, 84532, VECTOR_CONTRACT)
    assert signer.digest(*VECTOR_ARGS).hex() == VECTOR_DIGEST
    # The signature is over exactly that digest.
    auth = signer.sign(100 * ICY, VECTOR_ADDRESS, 15000, nonce=1, deadline=1893456000)
    recovered = Account._recover_hash(bytes.fromhex(VECTOR_DIGEST), signature=auth.signature_bytes)
    assert recovered == signer.address


def _contract_digest(chain: Chain, contract: str, args: tuple[int, str, int, int, int]) -> str:
    data = anvil.calldata(DIGEST_SIGNATURE, DIGEST_TYPES, list(args))
    result = chain.rpc.call("eth_call", {"to": contract, "data": "0x" + data.hex()}, "latest")
    return str(result).removeprefix("0x")


def test_the_solidity_contract_computes_the_issue_vector(chain: Chain) -> None:
    """The contract's own digest at the vector's address and chain equals the independent value."""
    code = chain.rpc.call("eth_getCode", chain.stack.swap, "latest")
    chain.rpc.call("anvil_setCode", VECTOR_CONTRACT, code)
    assert _contract_digest(chain, VECTOR_CONTRACT, VECTOR_ARGS) == VECTOR_DIGEST
    # And at the deployed address, it is what our signer computes for that address.
    ours = SwapSigner(SIGNER_KEY, CHAIN_ID, chain.stack.swap).digest(*VECTOR_ARGS).hex()
    assert _contract_digest(chain, chain.stack.swap, VECTOR_ARGS) == ours


def _swap_args(auth: SwapAuthorisation) -> SwapArgs:
    return (auth.icy_amount, auth.btc_address, auth.btc_amount, auth.nonce, auth.deadline, auth.signature_bytes)


def _revert_of(chain: Chain, args: SwapArgs) -> str | None:
    """The custom error a ``swap(...)`` from the user would revert with now (None: it would succeed)."""
    call = {"from": chain.user.address, "to": chain.stack.swap, "data": "0x" + anvil.swap_call(*args).hex()}
    try:
        chain.rpc.call("eth_call", call, "latest")
    except anvil.RpcFailure as exc:
        return exc.data
    return None


def _send(chain: Chain, args: SwapArgs) -> dict[str, object]:
    return chain.user.send(chain.stack.swap, anvil.swap_call(*args), gas=400_000)


def _icy_balance(chain: Chain, owner: str) -> int:
    data = anvil.calldata("balanceOf(address)", ["address"], [owner])
    result = chain.rpc.call("eth_call", {"to": chain.stack.icy, "data": "0x" + data.hex()}, "latest")
    return int(result, 16)


def test_the_contract_accepts_ours_and_refuses_replay_other_signer_and_passed_deadline(chain: Chain) -> None:
    signer = SwapSigner(SIGNER_KEY, CHAIN_ID, chain.stack.swap)
    before = _icy_balance(chain, chain.user.address)
    good = _swap_args(signer.sign(100 * ICY, VECTOR_ADDRESS, 9_000))
    assert _revert_of(chain, good) is None
    receipt = _send(chain, good)
    assert receipt["status"] == "0x1"
    logs: list[dict[str, Any]] = receipt["logs"]  # type: ignore[assignment]
    [log] = [entry for entry in logs if entry["address"].lower() == chain.stack.swap.lower()]
    assert log["topics"] == ["0x" + keccak(text="Swap(uint256,string,uint256)").hex()]  # nothing indexed
    assert abi_decode(["uint256", "string", "uint256"], bytes.fromhex(log["data"][2:])) == (
        100 * ICY,
        VECTOR_ADDRESS,
        9_000,
    )
    assert _icy_balance(chain, chain.user.address) == before - 100 * ICY
    assert _icy_balance(chain, chain.stack.swap) == 100 * ICY

    # Replay of the very same authorisation: the digest is used.
    assert _revert_of(chain, good) == anvil.error_selector("DigestAlreadyUsed()")
    assert _send(chain, good)["status"] == "0x0"

    # Another key (a leaked-looking signature that is not the configured signer's).
    other = SwapSigner("0x" + "42" * 32, CHAIN_ID, chain.stack.swap)
    assert _revert_of(chain, _swap_args(other.sign(100 * ICY, VECTOR_ADDRESS, 9_000))) == anvil.error_selector(
        "WrongSigner()"
    )

    # Signed for another contract or chain: recovers to some other address.
    elsewhere = SwapSigner(SIGNER_KEY, CHAIN_ID + 1, chain.stack.swap)
    assert _revert_of(chain, _swap_args(elsewhere.sign(100 * ICY, VECTOR_ADDRESS, 9_000))) == anvil.error_selector(
        "WrongSigner()"
    )

    # A passed deadline, although properly signed.
    now = int(time.time())
    late = _swap_args(signer.sign(100 * ICY, VECTOR_ADDRESS, 9_000, deadline=now - 3600))
    assert _revert_of(chain, late) == anvil.error_selector("DeadlinePassed()")
    assert _send(chain, late)["status"] == "0x0"

    # A malleable twin (s → n − s, v flipped) of a fresh valid signature is refused.
    fresh = _swap_args(signer.sign(100 * ICY, VECTOR_ADDRESS, 9_000))
    sig = fresh[5]
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (n - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big")
    twin = sig[:32] + high_s + bytes([55 - sig[64]])
    assert _revert_of(chain, (*fresh[:5], twin)) == anvil.error_selector("InvalidSignature()")
    assert _revert_of(chain, fresh) is None
    # Nothing but the first swap moved ICY.
    assert _icy_balance(chain, chain.stack.swap) == 100 * ICY


@pytest.mark.parametrize("field", ["icy_amount", "btc_address", "btc_amount", "nonce", "deadline"])
def test_any_tampered_field_is_refused(chain: Chain, field: str) -> None:
    signer = SwapSigner(SIGNER_KEY, CHAIN_ID, chain.stack.swap)
    icy, address, sats, nonce, deadline, sig = _swap_args(signer.sign(100 * ICY, VECTOR_ADDRESS, 9_000))
    tampered = {
        "icy_amount": (icy - 1, address, sats, nonce, deadline, sig),
        "btc_address": (icy, address[:-1] + "y", sats, nonce, deadline, sig),
        "btc_amount": (icy, address, sats + 1, nonce, deadline, sig),
        "nonce": (icy, address, sats, nonce + 1, deadline, sig),
        "deadline": (icy, address, sats, nonce, deadline + 1, sig),
    }[field]
    assert _revert_of(chain, tampered) == anvil.error_selector("WrongSigner()")
    assert _revert_of(chain, (icy, address, sats, nonce, deadline, sig)) is None


def test_the_user_must_have_approved_and_hold_the_icy(chain: Chain) -> None:
    """transferFrom really moves the ICY: a caller without allowance is refused and nothing is marked used."""
    signer = SwapSigner(SIGNER_KEY, CHAIN_ID, chain.stack.swap)
    args = _swap_args(signer.sign(100 * ICY, VECTOR_ADDRESS, 9_000))
    stranger = anvil.Wallet(chain.rpc, anvil.dev_key(5), CHAIN_ID)
    receipt = stranger.send(chain.stack.swap, anvil.swap_call(*args), gas=400_000)
    assert receipt["status"] == "0x0"
    # The digest was not consumed by the failed call: the approved user can still use it.
    assert _send(chain, args)["status"] == "0x1"
