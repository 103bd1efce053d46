"""ABI constants and encodings of the ICY token and the ICY/BTC swap contract (real topics and selectors)."""

from __future__ import annotations

from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.crypto import keccak

ZERO_ADDRESS = "0x" + "00" * 20


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


TRANSFER_TOPIC = _topic("Transfer(address,address,uint256)")
SWAP_TOPIC = _topic("Swap(uint256,string,uint256)")
SEL_TOTAL_SUPPLY = _selector("totalSupply()")  # 0x18160ddd
SEL_BALANCE_OF = _selector("balanceOf(address)")  # 0x70a08231
SEL_DECIMALS = _selector("decimals()")
SEL_SYMBOL = _selector("symbol()")
SEL_NAME = _selector("name()")
SEL_TRANSFER = _selector("transfer(address,uint256)")  # 0xa9059cbb
SEL_APPROVE = _selector("approve(address,uint256)")  # 0x095ea7b3
# swap(uint256 icyAmount,string btcAddress,uint256 btcAmount,uint256 nonce,uint256 deadline,bytes signature)
SEL_SWAP = _selector("swap(uint256,string,uint256,uint256,uint256,bytes)")  # 0xade44138
SEL_SIGNER_ADDRESS = _selector("signerAddress()")  # 0x5b7633d0
SEL_ICY = _selector("icy()")  # 0x7f245ab1
SWAP_ARG_TYPES = ["uint256", "string", "uint256", "uint256", "uint256", "bytes"]


def hex_data(data: bytes) -> str:
    return "0x" + data.hex()


def address_topic(address: str) -> str:
    return "0x" + "00" * 12 + address.lower().removeprefix("0x")


def uint_word(value: int) -> str:
    return hex_data(encode(["uint256"], [value]))


def transfer_data(value: int) -> str:
    return uint_word(value)


def swap_data(icy_amount: int, btc_address: str, btc_amount: int) -> str:
    """Data of the non-indexed ``Swap(uint256 icyAmount, string btcAddress, uint256 btcAmount)`` event."""
    return hex_data(encode(["uint256", "string", "uint256"], [icy_amount, btc_address, btc_amount]))


def decode_swap_data(data: str) -> tuple[int, str, int]:
    icy, btc_address, btc = decode(["uint256", "string", "uint256"], bytes.fromhex(data.removeprefix("0x")))
    return int(icy), str(btc_address), int(btc)


def swap_calldata(
    icy_amount: int, btc_address: str, btc_amount: int, nonce: int, deadline: int, signature: bytes
) -> str:
    """Calldata of ``swap(icyAmount, btcAddress, btcAmount, nonce, deadline, signature)``."""
    args = [icy_amount, btc_address, btc_amount, nonce, deadline, signature]
    return SEL_SWAP + encode(SWAP_ARG_TYPES, args).hex()


def decode_swap_call(calldata: bytes) -> tuple[Any, ...]:
    """(icyAmount, btcAddress, btcAmount, nonce, deadline, signature) from calldata minus selector."""
    return tuple(decode(SWAP_ARG_TYPES, calldata))


def transfer_calldata(to: str, value: int) -> str:
    return SEL_TRANSFER + encode(["address", "uint256"], [to, value]).hex()
