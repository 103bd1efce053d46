"""EIP-712 swap authorisation signed by the swap signer key (SPEC §9 "Swap signature").

Domain ``{name: "ICY BTC SWAP", version: "1", chainId, verifyingContract}``, primary type
``Swap(uint256 icyAmount,string btcAddress,uint256 btcAmount,uint256 nonce,uint256 deadline)``; the
signature is r‖s‖v with v ∈ {27, 28}, 130 lowercase hex characters without ``0x``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

DOMAIN_NAME = "ICY BTC SWAP"
DOMAIN_VERSION = "1"
DEADLINE_SECONDS = 600
UINT256_MAX = 2**256 - 1

SWAP_TYPES: dict[str, list[dict[str, str]]] = {
    "Swap": [
        {"name": "icyAmount", "type": "uint256"},
        {"name": "btcAddress", "type": "string"},
        {"name": "btcAmount", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}


def new_nonce() -> int:
    """A fresh unique uint256 (256 random bits: a collision is as likely as guessing a private key)."""
    return secrets.randbits(256)


@dataclass(frozen=True)
class SwapAuthorisation:
    """A signed ``Swap`` message; ``signature`` is 130 hex chars (r‖s‖v), no ``0x``."""

    icy_amount: int
    btc_address: str
    btc_amount: int
    nonce: int
    deadline: int
    signature: str

    @property
    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature)


class SwapSigner:
    """Signs swap authorisations for one chain and swap contract. The key never leaves this object."""

    def __init__(self, private_key: str, chain_id: int, verifying_contract: str) -> None:
        self._account = Account.from_key(private_key)
        self.chain_id = int(chain_id)
        self.verifying_contract = to_checksum_address(verifying_contract)

    def __repr__(self) -> str:  # never show the key
        return f"SwapSigner(address={self.address}, chain_id={self.chain_id})"

    @property
    def address(self) -> str:
        return str(self._account.address)

    def domain(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }

    def digest(self, icy_amount: int, btc_address: str, btc_amount: int, nonce: int, deadline: int) -> bytes:
        """The 32-byte EIP-712 digest ``keccak(0x19 ‖ 0x01 ‖ domainSeparator ‖ hashStruct(Swap))``."""
        message = _message(icy_amount, btc_address, btc_amount, nonce, deadline)
        signable = encode_typed_data(self.domain(), SWAP_TYPES, message)
        return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))

    def sign(
        self,
        icy_amount: int,
        btc_address: str,
        btc_amount: int,
        *,
        nonce: int | None = None,
        deadline: int | None = None,
        now: float | None = None,
    ) -> SwapAuthorisation:
        """Sign with a fresh nonce and ``deadline = now + 600 s`` unless given."""
        if nonce is None:
            nonce = new_nonce()
        if deadline is None:
            deadline = int(time.time() if now is None else now) + DEADLINE_SECONDS
        message = _message(icy_amount, btc_address, btc_amount, nonce, deadline)
        signable = encode_typed_data(self.domain(), SWAP_TYPES, message)
        signed = self._account.sign_message(signable)
        raw = bytes(signed.signature)
        if len(raw) != 65 or raw[64] not in (27, 28):
            raise RuntimeError("unexpected signature encoding")
        return SwapAuthorisation(icy_amount, btc_address, btc_amount, nonce, deadline, raw.hex())


def _message(icy_amount: int, btc_address: str, btc_amount: int, nonce: int, deadline: int) -> dict[str, Any]:
    for name, value in (
        ("icy_amount", icy_amount),
        ("btc_amount", btc_amount),
        ("nonce", nonce),
        ("deadline", deadline),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
            raise ValueError(f"{name} must be a uint256")
    return {
        "icyAmount": icy_amount,
        "btcAddress": btc_address,
        "btcAmount": btc_amount,
        "nonce": nonce,
        "deadline": deadline,
    }
