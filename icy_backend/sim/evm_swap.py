"""``eth_sendRawTransaction`` for the simulator: a signed EIP-1559 ``swap(...)`` call to the swap contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

from icy_backend.sim.evm_chain import RpcError

if TYPE_CHECKING:
    from icy_backend.sim.evm_chain import EvmChain


def apply_raw_transaction(chain: EvmChain, raw_hex: str) -> str:
    """Decode, check and apply a raw transaction; returns its hash."""
    raise RpcError(-32000, "eth_sendRawTransaction is not supported yet")
