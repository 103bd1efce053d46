"""EIP-712 swap signer edges: uint256 bounds, the deadline default, nonces, the checksummed contract, repr."""

from __future__ import annotations

import hashlib
import time

import pytest
from eth_account import Account

from icy_backend.domain.signature import DEADLINE_SECONDS, UINT256_MAX, SwapSigner, new_nonce

KEY = "0x" + hashlib.sha256(b"icy edge signer").hexdigest()
CONTRACT = "0x" + "ab" * 20
CHECKSUMMED = "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"  # EIP-55 of 0xabab...ab
ADDRESS = "tb1qsah2hee6q5u07rra6lpqcmkfhkkc7e7ysrpsup"


def _signer(chain_id: int = 84532) -> SwapSigner:
    return SwapSigner(KEY, chain_id, CONTRACT)


def test_constants() -> None:
    assert DEADLINE_SECONDS == 600
    assert UINT256_MAX == 2**256 - 1


def test_signer_identity_and_repr() -> None:
    signer = SwapSigner(KEY, "8453", CONTRACT)  # type: ignore[arg-type]
    assert signer.chain_id == 8453 and isinstance(signer.chain_id, int)
    assert signer.verifying_contract == CHECKSUMMED
    address = Account.from_key(KEY).address
    assert signer.address == address
    assert repr(signer) == f"SwapSigner(address={address}, chain_id=8453)"
    assert signer.domain() == {
        "name": "ICY BTC SWAP",
        "version": "1",
        "chainId": 8453,
        "verifyingContract": CHECKSUMMED,
    }


def test_given_nonce_and_deadline_are_signed_as_given() -> None:
    auth = _signer().sign(10, ADDRESS, 20, nonce=7, deadline=9)
    assert (auth.icy_amount, auth.btc_address, auth.btc_amount, auth.nonce, auth.deadline) == (10, ADDRESS, 20, 7, 9)
    digest = _signer().digest(10, ADDRESS, 20, 7, 9)
    assert Account._recover_hash(digest, signature=auth.signature_bytes) == _signer().address
    assert auth.signature_bytes == bytes.fromhex(auth.signature) and len(auth.signature_bytes) == 65
    assert auth.signature == auth.signature.lower()
    # Deterministic (RFC 6979): the same message gives the same signature; another nonce another one.
    assert _signer().sign(10, ADDRESS, 20, nonce=7, deadline=9).signature == auth.signature
    assert _signer().sign(10, ADDRESS, 20, nonce=8, deadline=9).signature != auth.signature


def test_the_default_deadline_is_ten_minutes_from_now() -> None:
    assert _signer().sign(1, ADDRESS, 1, nonce=1, now=1_700_000_000.9).deadline == 1_700_000_600
    before = int(time.time())
    auth = _signer().sign(1, ADDRESS, 1, nonce=1)
    after = int(time.time())
    assert before + 600 <= auth.deadline <= after + 600
    # A given deadline wins over `now`.
    assert _signer().sign(1, ADDRESS, 1, nonce=1, deadline=5, now=1_700_000_000).deadline == 5


def test_nonces_are_256_bit() -> None:
    nonces = [new_nonce() for _ in range(200)]
    assert all(0 <= n < 2**256 for n in nonces)
    assert max(nonces) >= 2**255 - 2**250  # the top bit is set for about half of them
    assert len(set(nonces)) == 200


def test_both_recovery_ids_are_produced_and_accepted() -> None:
    vs = {_signer().sign(1, ADDRESS, 1, nonce=n, deadline=1).signature_bytes[64] for n in range(40)}
    assert vs == {27, 28}


@pytest.mark.parametrize("field", ["icy_amount", "btc_amount", "nonce", "deadline"])
@pytest.mark.parametrize("bad", [-1, UINT256_MAX + 1, True, False, "5", 1.0, None])
def test_every_integer_must_be_a_uint256(field: str, bad: object) -> None:
    values: dict[str, object] = {"icy_amount": 1, "btc_amount": 1, "nonce": 1, "deadline": 1}
    values[field] = bad
    with pytest.raises(ValueError, match=f"^{field} must be a uint256$"):
        _signer().digest(btc_address=ADDRESS, **values)  # type: ignore[arg-type]
    if bad is None and field in ("nonce", "deadline"):
        return  # None asks sign() for a fresh nonce / the default deadline
    with pytest.raises(ValueError, match=f"^{field} must be a uint256$"):
        _signer().sign(
            values["icy_amount"],  # type: ignore[arg-type]
            ADDRESS,
            values["btc_amount"],  # type: ignore[arg-type]
            nonce=values["nonce"],  # type: ignore[arg-type]
            deadline=values["deadline"],  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("value", [0, 1, UINT256_MAX])
def test_uint256_bounds_are_accepted(value: int) -> None:
    auth = _signer().sign(value, ADDRESS, value, nonce=value, deadline=value)
    digest = _signer().digest(value, ADDRESS, value, value, value)
    assert Account._recover_hash(digest, signature=auth.signature_bytes) == _signer().address


def test_every_field_is_in_the_digest() -> None:
    base = _signer().digest(1, ADDRESS, 2, 3, 4)
    others = {
        _signer().digest(9, ADDRESS, 2, 3, 4),
        _signer().digest(1, ADDRESS + "x", 2, 3, 4),
        _signer().digest(1, ADDRESS, 9, 3, 4),
        _signer().digest(1, ADDRESS, 2, 9, 4),
        _signer().digest(1, ADDRESS, 2, 3, 9),
        _signer(1).digest(1, ADDRESS, 2, 3, 4),
        SwapSigner(KEY, 84532, "0x" + "cd" * 20).digest(1, ADDRESS, 2, 3, 4),
    }
    assert base not in others and len(others) == 7
    assert len(base) == 32


class _OddSignature:
    def __init__(self, raw: bytes) -> None:
        self.signature = raw


class _OddAccount:
    """An account whose signatures are not r‖s‖v with v ∈ {27, 28} (e.g. a library returning v ∈ {0, 1})."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def sign_message(self, signable: object) -> _OddSignature:
        return _OddSignature(self.raw)


@pytest.mark.parametrize("raw", [bytes(64) + b"\x01", bytes(64) + b"\x00", bytes(65) + b"\x1b", bytes(63) + b"\x1b"])
def test_a_signature_in_another_encoding_is_never_returned(raw: bytes) -> None:
    signer = _signer()
    signer._account = _OddAccount(raw)
    with pytest.raises(RuntimeError, match=r"^unexpected signature encoding$"):
        signer.sign(1, ADDRESS, 1, nonce=1, deadline=1)
