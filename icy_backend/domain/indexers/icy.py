"""ICY ``Transfer`` indexer (SPEC §9): one row per log, ``(transaction_hash, log_index)`` unique.

Type, relative to the service's own ICY addresses (the swap contract and the swap signer wallet, which receives
the ICY of swap requests): ``in`` = into them from outside, ``out`` = from them to outside, else ``transfer``.
(The old service classified relative to the token contract itself, so nearly every row was ``transfer``.)
Addresses are stored EIP-55 checksummed; compare them case-insensitively.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.clients.errors import InvalidResponse, NotConfigured
from icy_backend.clients.evm import Block, EvmRpcClient, Log, parse_block
from icy_backend.db.engine import insert_ignore
from icy_backend.db.tables import onchain_icy_transactions
from icy_backend.db.types import utcnow
from icy_backend.domain.indexers import cursors
from icy_backend.domain.indexers.cursors import BlockRef
from icy_backend.domain.indexers.logscan import LogScanner, NotReady, Report, scan_config
from icy_backend.metrics.business import indexed
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings

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


def transfer_row(entry: Log, own: set[str], block_time: int) -> dict[str, Any] | None:
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
        "block_hash": entry.block_hash,
        "type": classify(frm, to, own),
        "amount": int.from_bytes(entry.data, "big"),
        "from_address": frm,
        "to_address": to,
        "created_at": now,
        "updated_at": now,
    }


class BlockTimes:
    """Block timestamps of a chunk's logs: headers in JSON-RPC batches, each checked against the hash the log
    carries (a header from a node on another branch, or one that lacks the block, is never used)."""

    def __init__(self, evm: EvmRpcClient) -> None:
        self.evm = evm
        self.times: dict[str, int] = {}  # by block hash

    async def fetch(self, logs: list[Log], known: Block) -> dict[str, int]:
        self.times[known.hash] = known.timestamp
        wanted = {entry.block_hash: entry.block_number for entry in logs if entry.block_hash not in self.times}
        numbers = sorted(set(wanted.values()))
        for i in range(0, len(numbers), 50):
            part = numbers[i : i + 50]
            answers = await self.evm.batch(
                [("eth_getBlockByNumber", [hex(n), False]) for n in part], op="eth_getBlockByNumber"
            )
            for answer in answers:
                if answer is not None:
                    header = parse_block(answer)
                    self.times[header.hash] = header.timestamp
        missing = [h for h in wanted if h not in self.times]
        if missing:
            raise NotReady(f"{len(missing)} block header(s) of the chunk's logs not available on this endpoint")
        return self.times


class IcyTransferHandler:
    """Rows of the ICY token's Transfer logs."""

    chain = "icy"

    def __init__(self, engine: AsyncEngine, evm: EvmRpcClient, metrics: Metrics, own: set[str]) -> None:
        self.engine = engine
        self.metrics = metrics
        self.own = own
        self.times = BlockTimes(evm)

    async def prepare(self, logs: list[Log], header: Block) -> list[dict[str, Any]]:
        times = await self.times.fetch(logs, header) if logs else {}
        rows = []
        for entry in logs:
            row = transfer_row(entry, self.own, times[entry.block_hash])
            if row is None:
                log.warning("icy indexer: skipped a log that is not an ERC-20 Transfer")
                continue
            rows.append(row)
        return rows

    async def store(self, conn: AsyncConnection, prepared: list[dict[str, Any]]) -> int:
        if not prepared:
            return 0
        stmt = insert_ignore(self.engine, onchain_icy_transactions).returning(onchain_icy_transactions.c.id)
        inserted = len((await conn.execute(stmt, prepared)).all())
        indexed(self.metrics, "icy", inserted)
        return inserted

    async def rollback(self, conn: AsyncConnection, fork: BlockRef) -> int:
        table = onchain_icy_transactions
        result = await conn.execute(delete(table).where(table.c.block_number > fork.number))
        return int(result.rowcount or 0)


class IcyTransferIndexer:
    """Indexes the ICY token's Transfer logs from the cursor to the scan target (reorg-aware, see logscan)."""

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
        self.handler = IcyTransferHandler(engine, evm, metrics, {a.lower() for a in own_addresses if a})
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

    async def run(self, heartbeat: Callable[[], None], report: Report) -> int:
        token = self.settings.BLOCKCHAIN_ICY_CONTRACT_ADDR
        if not token:
            raise NotConfigured("base_rpc", "BLOCKCHAIN_ICY_CONTRACT_ADDR")
        start = await self.initial_block()  # cached; used when there is no cursor yet
        config = scan_config(self.settings, cursors.ICY_CURSOR, token, [TRANSFER_TOPIC], start)
        result = await LogScanner(self.engine, self.evm, self.metrics, config).run(self.handler, heartbeat, report)
        report.set_metadata("rows_inserted", result.inserted)
        report.set_metadata("chunks", result.chunks)
        log.info("icy indexer: %d chunk(s), %d row(s) inserted", result.chunks, result.inserted)
        return result.inserted


__all__ = ["TRANSFER_TOPIC", "BlockTimes", "IcyTransferHandler", "IcyTransferIndexer", "classify", "transfer_row"]
