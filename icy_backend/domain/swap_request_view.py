"""What one EVM endpoint says about a swap request's transactions, read in **one** JSON-RPC batch (SPEC §9).

The batch holds ``eth_blockNumber``, the signer's ``eth_getTransactionCount`` at a block, and for every
transaction of the request (the stored one and those a same-nonce replacement superseded) the transaction and
its receipt. Nothing is ever decided on reads that different nodes answered (fix: a nonce read from an
up-to-date node and a receipt read from a lagging one re-sent a swap that had already been mined).
"""

from __future__ import annotations

from dataclasses import dataclass

from icy_backend.clients.errors import InvalidResponse
from icy_backend.clients.evm import SERVICE, BlockTag, EvmRpcClient, Receipt, block_tag, hex_int, parse_receipt

OP = "swap_request_state"


@dataclass(frozen=True)
class ChainView:
    """One endpoint's answers, all from one batch."""

    endpoint: int
    head: int
    nonce_count: int  # transactions the signer has mined as of the block asked for
    known: dict[str, bool]  # hash -> the endpoint knows the transaction (pending or mined)
    receipts: dict[str, Receipt | None]

    def mined(self) -> tuple[str, Receipt] | None:
        """The request's transaction this endpoint has a receipt for (at most one: they share one nonce)."""
        for tx_hash, receipt in self.receipts.items():
            if receipt is not None:
                return tx_hash, receipt
        return None

    def knows_any(self) -> bool:
        return any(self.known.values()) or self.mined() is not None


async def read_view(evm: EvmRpcClient, signer: str, hashes: list[str], at: BlockTag = "latest") -> ChainView:
    """``eth_blockNumber``, the signer's nonce count at ``at``, each transaction and receipt: one batch, one
    endpoint (failover moves the whole batch)."""
    calls: list[tuple[str, list[object]]] = [
        ("eth_blockNumber", []),
        ("eth_getTransactionCount", [signer, block_tag(at)]),
    ]
    calls += [("eth_getTransactionByHash", [h]) for h in hashes]
    calls += [("eth_getTransactionReceipt", [h]) for h in hashes]
    answer = await evm.batch(calls, op=OP)
    n = len(hashes)
    txs, receipts = answer[2 : 2 + n], answer[2 + n : 2 + 2 * n]
    try:
        return ChainView(
            endpoint=answer.endpoint,
            head=hex_int(answer[0]),
            nonce_count=hex_int(answer[1]),
            known={h: tx is not None for h, tx in zip(hashes, txs, strict=True)},
            receipts={h: None if r is None else parse_receipt(r) for h, r in zip(hashes, receipts, strict=True)},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidResponse(SERVICE, f"{OP}: {type(exc).__name__}") from None


__all__ = ["OP", "ChainView", "read_view"]
