"""ICY ``Transfer`` indexer (SPEC §9): one row per log, ``(transaction_hash, log_index)`` unique.

Type, relative to the service's own ICY addresses (the swap contract and the swap signer wallet, which receives
the ICY of swap requests): ``in`` = into them from outside, ``out`` = from them to outside, else ``transfer``.
(The old service classified relative to the token contract itself, so nearly every row was ``transfer``.)
Addresses are stored EIP-55 checksummed; compare them case-insensitively.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import InvalidResponse, NotConfigured
from icy_backend.clients.evm import EvmRpcClient, Log
from icy_backend.db.engine import insert_ignore
from icy_backend.db.tables import onchain_icy_transactions
from icy_backend.db.types import utcnow
from icy_backend.domain.indexers import cursors
from icy_backend.domain.indexers.logscan import BlockTimes, scan_logs
from icy_backend.metrics.business import indexed
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings
from jobs.context import JobContext

log = logging.getLogger(__name__)

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


def topic_address(topic: str) -> str:
    return str(to_checksum_address("0x" + topic[-40:]))


def classify(frm: str, to: str, own: set[str]) -> str:
    """``in`` / ``out`` / ``transfer`` relative to the service's own addresses (lower-case set)."""
    from_own, to_own = frm.lower() in own, to.lower() in own
    if to_own and not from_own:
        return "in"
    if from_own and not to_own:
        return "out"
    return "transfer"


def transfer_row(entry: Log, own: set[str], block_time: int | None) -> dict[str, Any] | None:
    """The row of one Transfer log, or None when the log is not an ERC-20 Transfer (e.g. ERC-721 shape)."""
    if len(entry.topics) != 3 or entry.topics[0] != TRANSFER_TOPIC or len(entry.data) != 32:
        return None
    frm, to = topic_address(entry.topics[1]), topic_address(entry.topics[2])
    now = utcnow()
    return {
        "transaction_hash": entry.transaction_hash,
        "log_index": entry.log_index,
        "block_number": entry.block_number,
        "block_time": block_time,
        "type": classify(frm, to, own),
        "amount": int.from_bytes(entry.data, "big"),
        "from_address": frm,
        "to_address": to,
        "created_at": now,
        "updated_at": now,
    }


class IcyTransferIndexer:
    """Indexes the ICY token's Transfer logs from the cursor to ``latest - confirmations``."""

    def __init__(
        self,
        engine: AsyncEngine,
        evm: EvmRpcClient,
        settings: Settings,
        metrics: Metrics,
        own_addresses: Iterable[str] = (),
    ) -> None:
        self.engine = engine
        self.evm = evm
        self.settings = settings
        self.metrics = metrics
        self.own = {a.lower() for a in own_addresses if a}
        self._initial_block: int | None = None

    async def initial_block(self) -> int:
        """The block of ``BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH`` (inclusive), 0 when unset."""
        tx_hash = self.settings.BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH
        if not tx_hash:
            return 0
        if self._initial_block is None:
            receipt = await self.evm.transaction_receipt(tx_hash)
            if receipt is None:
                raise InvalidResponse("base_rpc", "the initial ICY transaction has no receipt")
            self._initial_block = receipt.block_number
        return self._initial_block

    async def run(self, ctx: JobContext) -> int:
        token = self.settings.BLOCKCHAIN_ICY_CONTRACT_ADDR
        if not token:
            raise NotConfigured("base_rpc", "BLOCKCHAIN_ICY_CONTRACT_ADDR")
        async with self.engine.connect() as conn:
            cursor = await cursors.get_block(conn, cursors.ICY_CURSOR)
        start = cursor + 1 if cursor is not None else await self.initial_block()
        end = await self.evm.block_number() - self.settings.BLOCKCHAIN_CONFIRMATIONS
        times = BlockTimes(self.evm)

        async def store(logs: list[Log], chunk_end: int) -> int:
            block_times = await times.fetch({entry.block_number for entry in logs})
            rows = []
            for entry in logs:
                row = transfer_row(entry, self.own, block_times.get(entry.block_number))
                if row is None:
                    log.warning("icy indexer: skipped a log that is not an ERC-20 Transfer")
                    continue
                rows.append(row)
            async with self.engine.begin() as conn:
                inserted = 0
                if rows:
                    stmt = insert_ignore(self.engine, onchain_icy_transactions).returning(onchain_icy_transactions.c.id)
                    inserted = len((await conn.execute(stmt, rows)).all())
                await cursors.set_block(conn, cursors.ICY_CURSOR, chunk_end)
            indexed(self.metrics, "icy", inserted)
            ctx.set_metadata("cursor_block", chunk_end)
            return inserted

        result = await scan_logs(
            self.evm, token, [TRANSFER_TOPIC], start, end, self.settings.BLOCKCHAIN_LOG_CHUNK_BLOCKS, store, ctx
        )
        ctx.set_metadata("rows_inserted", result.inserted)
        ctx.set_metadata("chunks", result.chunks)
        log.info("icy indexer: %d chunk(s), %d row(s) inserted", result.chunks, result.inserted)
        return result.inserted


__all__ = ["TRANSFER_TOPIC", "IcyTransferIndexer", "classify", "transfer_row"]
