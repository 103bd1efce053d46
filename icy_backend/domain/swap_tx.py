"""The signer wallet's ``swap(...)`` transaction: calldata, EIP-1559 fees, local signing (SPEC §9 swap requests).

A request's transaction is built once at a nonce the sender lock allocated; a **replacement** keeps that nonce and
the amounts, carries a fresh EIP-712 authorisation (new signature nonce and deadline) and raises both fee caps by
at least the 10 % nodes require of a replacement (rounded up), or to the market when that is higher. Since every
transaction of a request shares one account nonce, at most one of them can ever be mined: exactly-once.

Only ``swap(icyAmount, btcAddress, btcAmount, nonce, deadline, signature)`` on the configured swap contract is
ever signed here: the ICY goes into the contract, nothing is authorised that would send ICY back to a caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from icy_backend.clients.evm import EvmRpcClient
from icy_backend.db.tables import swap_requests
from icy_backend.domain.signature import SwapAuthorisation

SWAP_SELECTOR = keccak(text="swap(uint256,string,uint256,uint256,uint256,bytes)")[:4]
SWAP_ARG_TYPES = ["uint256", "string", "uint256", "uint256", "uint256", "bytes"]
GAS_HEADROOM_NUM, GAS_HEADROOM_DEN = 12, 10  # estimate x 1.2
BUMP_NUM, BUMP_DEN = 11, 10  # a replacement pays at least 110 % of both fee caps


def swap_calldata(icy: int, btc_address: str, sats: int, nonce: int, deadline: int, signature: bytes) -> bytes:
    return SWAP_SELECTOR + abi_encode(SWAP_ARG_TYPES, [icy, btc_address, sats, nonce, deadline, signature])


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fee caps in wei per gas."""

    max_fee: int
    max_priority: int

    @classmethod
    def market(cls, base_fee: int, priority: int) -> Fees:
        return cls(2 * base_fee + priority, priority)

    def bumped(self, market: Fees) -> Fees:
        """At least 110 % of both caps (rounded up), and at least the market's."""
        priority = max(_ceil_bump(self.max_priority), market.max_priority)
        max_fee = max(_ceil_bump(self.max_fee), market.max_fee, priority)
        return Fees(max_fee, priority)


def _ceil_bump(value: int) -> int:
    return -(-value * BUMP_NUM // BUMP_DEN)


@dataclass(frozen=True)
class SwapTx:
    """A signed transaction ready to store and send."""

    raw: str  # 0x-prefixed
    hash: str  # 0x-prefixed
    nonce: int  # account nonce
    gas: int
    fees: Fees
    auth: SwapAuthorisation

    @property
    def deadline(self) -> int:
        return self.auth.deadline


@dataclass(frozen=True)
class StoredTx:
    """What a stored raw transaction says about itself."""

    nonce: int
    gas: int
    fees: Fees


def decode_stored(raw: str) -> StoredTx:
    tx: Any = TypedTransaction.from_bytes(HexBytes(raw))
    data = tx.as_dict()
    return StoredTx(
        int(data["nonce"]), int(data["gas"]), Fees(int(data["maxFeePerGas"]), int(data["maxPriorityFeePerGas"]))
    )


async def market_fees(evm: EvmRpcClient) -> Fees:
    """Fee caps at today's base fee (x2 headroom) and the node's suggested priority fee."""
    block = await evm.block_by_number("latest")
    base_fee = block.base_fee_per_gas if block is not None and block.base_fee_per_gas is not None else 0
    return Fees.market(base_fee, await evm.max_priority_fee_per_gas())


async def next_nonce(conn: AsyncConnection, evm: EvmRpcClient, sender: str) -> int:
    """The node's pending count, or one past the highest nonce of a request still ``sending`` (stored by any
    processor, maybe not sent yet), whichever is higher. Call it under the sender lock, in the transaction that
    stores the request's transaction."""
    node = await evm.transaction_count(sender, "pending")
    stored = await conn.scalar(select(func.max(swap_requests.c.evm_nonce)).where(swap_requests.c.status == "sending"))
    return node if stored is None else max(node, int(stored) + 1)


def authorisation_calldata(auth: SwapAuthorisation) -> bytes:
    """The ``swap(...)`` calldata carrying ``auth``."""
    return swap_calldata(
        auth.icy_amount, auth.btc_address, auth.btc_amount, auth.nonce, auth.deadline, auth.signature_bytes
    )


def sign_swap_tx(
    key: str, chain_id: int, contract: str, auth: SwapAuthorisation, *, nonce: int, gas: int, fees: Fees
) -> SwapTx:
    """``auth`` (a fresh EIP-712 authorisation) wrapped in a signed EIP-1559 ``swap`` call to ``contract``."""
    data = authorisation_calldata(auth)
    tx = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": contract,
        "value": 0,
        "data": data,
        "gas": gas,
        "maxPriorityFeePerGas": fees.max_priority,
        "maxFeePerGas": fees.max_fee,
    }
    signed = Account.sign_transaction(tx, key)
    raw = "0x" + bytes(signed.raw_transaction).hex()
    return SwapTx(raw, "0x" + bytes(signed.hash).hex(), nonce, gas, fees, auth)


__all__ = [
    "BUMP_DEN",
    "BUMP_NUM",
    "GAS_HEADROOM_DEN",
    "GAS_HEADROOM_NUM",
    "Fees",
    "StoredTx",
    "SwapTx",
    "authorisation_calldata",
    "decode_stored",
    "market_fees",
    "next_nonce",
    "sign_swap_tx",
    "swap_calldata",
]
