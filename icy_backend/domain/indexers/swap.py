"""Swap event indexer (SPEC §9): each ``Swap(uint256 icyAmount, string btcAddress, uint256 btcAmount)`` log of the
swap contract becomes, in the same DB transaction as the chunk's cursor, an ``onchain_icy_swap_transactions`` row
and one payout keyed by the event (see :mod:`swap_payouts` for the payout's decision and its reorg rules).

The event index is the position of the log among the swap contract's Swap events **in its transaction** (0, 1, …):
two identical swaps in one transaction emit identical logs, and a re-included transaction keeps its event indexes
while its ``log_index`` changes. A transaction's sender comes from ``eth_getTransactionByHash``; when a (lagging)
node does not know the transaction yet the chunk is not stored (never a placeholder sender) and the pass retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.clients.errors import NotConfigured
from icy_backend.clients.evm import Block, EvmRpcClient, Log, parse_transaction
from icy_backend.db.engine import insert_ignore
from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps
from icy_backend.db.types import utcnow
from icy_backend.domain.indexers import cursors, swap_payouts
from icy_backend.domain.indexers.cursors import BlockRef
from icy_backend.domain.indexers.logscan import LogScanner, NotReady, Report, scan_config
from icy_backend.domain.indexers.swap_payouts import PricingRatio, payable, payout_row, storable
from icy_backend.metrics.business import indexed
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

SWAP_TOPIC = "0x" + keccak(text="Swap(uint256,string,uint256)").hex()
BATCH = 50


def decode_swap(entry: Log) -> tuple[int, str, int] | None:
    """``(icy_amount, btc_address, btc_amount)`` of a Swap log, or None when it does not decode."""
    if not entry.topics or entry.topics[0] != SWAP_TOPIC:
        return None
    try:
        icy_amount, btc_address, btc_amount = abi_decode(["uint256", "string", "uint256"], entry.data)
    except Exception:
        return None
    return int(icy_amount), str(btc_address), int(btc_amount)


def event_indexes(logs: list[Log]) -> list[int]:
    """Each log's position among the Swap logs of its transaction, in log order (the chunk holds whole blocks,
    so every Swap log of a transaction is in it)."""
    order = sorted(range(len(logs)), key=lambda i: (logs[i].block_number, logs[i].log_index))
    seen: dict[str, int] = {}
    out = [0] * len(logs)
    for i in order:
        tx_hash = logs[i].transaction_hash
        out[i] = seen.get(tx_hash, 0)
        seen[tx_hash] = out[i] + 1
    return out


@dataclass
class Chunk:
    swap_rows: list[dict[str, Any]] = field(default_factory=list)
    payout_rows: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)


class SwapHandler:
    """Swap rows and their payouts."""

    chain = "icy_swap"

    def __init__(
        self,
        engine: AsyncEngine,
        evm: EvmRpcClient,
        settings: Settings,
        metrics: Metrics,
        ratio: PricingRatio,
        report: Report,
    ) -> None:
        self.engine = engine
        self.evm = evm
        self.settings = settings
        self.metrics = metrics
        self.ratio = ratio
        self.report = report
        self.created = self.reattached = 0

    async def _senders(self, hashes: list[str]) -> dict[str, str]:
        senders: dict[str, str] = {}
        for i in range(0, len(hashes), BATCH):
            part = hashes[i : i + BATCH]
            answers = await self.evm.batch(
                [("eth_getTransactionByHash", [h]) for h in part], op="eth_getTransactionByHash"
            )
            for h, answer in zip(part, answers, strict=True):
                if answer is None:
                    raise NotReady("a Swap event's transaction is unknown to this endpoint")
                senders[h] = str(to_checksum_address(parse_transaction(answer).from_address))
        return senders

    async def prepare(self, logs: list[Log], header: Block) -> Chunk:
        chunk = Chunk()
        if not logs:
            return chunk
        senders = await self._senders(sorted({e.transaction_hash for e in logs}))
        events = []
        for entry, index in zip(logs, event_indexes(logs), strict=True):
            decoded = decode_swap(entry)
            if decoded is None:
                log.error("swap indexer: skipped a Swap log that does not decode")
                self.report.item_failed("undecodable_log")
                continue
            events.append((entry, index, decoded))
        ratio = None
        if any(payable(btc, sats, self.settings) for _, _, (_, btc, sats) in events):
            ratio = await self.ratio()  # unavailable: raises, the chunk is left for the next pass
        now = utcnow()
        for entry, index, (icy, btc, sats) in events:
            chunk.swap_rows.append(
                {
                    "transaction_hash": entry.transaction_hash,
                    "log_index": entry.log_index,
                    "event_index": index,
                    "block_number": entry.block_number,
                    "block_hash": entry.block_hash,
                    "icy_amount": icy,
                    "from_address": senders[entry.transaction_hash],
                    "btc_address": storable(btc),
                    "btc_amount": sats,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            key = (entry.transaction_hash, index)
            chunk.payout_rows[key] = payout_row(*key, icy, btc, sats, self.settings, ratio, now)
        return chunk

    async def store(self, conn: AsyncConnection, prepared: Chunk) -> int:
        if not prepared.swap_rows:
            return 0
        stmt = insert_ignore(self.engine, swaps).returning(swaps.c.transaction_hash, swaps.c.event_index)
        new_keys = [(r[0], int(r[1])) for r in (await conn.execute(stmt, prepared.swap_rows)).all()]
        made: set[tuple[str, int]] = set()
        rows = [prepared.payout_rows[k] for k in new_keys]
        if rows:
            stmt = insert_ignore(self.engine, payouts).returning(
                payouts.c.swap_transaction_hash, payouts.c.swap_event_index
            )
            made = {(r[0], int(r[1])) for r in (await conn.execute(stmt, rows)).all()}
        existing = [k for k in new_keys if k not in made]
        reattached = await swap_payouts.reattach(conn, existing)
        if reattached:
            log.warning("swap indexer: %d reorged payout(s) re-attached to their re-appeared Swap event", reattached)
        self.created += len(made)
        self.reattached += reattached
        for _ in made:
            self.report.item_succeeded()
        indexed(self.metrics, "icy_swap", len(new_keys))
        return len(new_keys)

    async def rollback(self, conn: AsyncConnection, fork: BlockRef) -> int:
        stmt = (
            delete(swaps)
            .where(swaps.c.block_number > fork.number)
            .returning(swaps.c.transaction_hash, swaps.c.event_index)
        )
        keys = [(r[0], int(r[1])) for r in (await conn.execute(stmt)).all()]
        deleted, flagged = await swap_payouts.detach(conn, keys, fork.number)
        if flagged:
            log.warning(
                "swap indexer: %d payout(s) already broadcast lost their Swap event to a reorg (flagged reorged)",
                flagged,
            )
        log.warning("swap indexer: reorg removed %d Swap event(s) and %d unsent payout(s)", len(keys), deleted)
        return len(keys)


class SwapIndexer:
    """Indexes the swap contract's Swap events and creates their payouts (reorg-aware, see logscan)."""

    def __init__(
        self, engine: AsyncEngine, evm: EvmRpcClient, settings: Settings, metrics: Metrics, ratio: PricingRatio
    ) -> None:
        self.engine = engine
        self.evm = evm
        self.settings = settings
        self.metrics = metrics
        self.ratio = ratio

    async def run(self, heartbeat: Callable[[], None], report: Report) -> int:
        contract = self.settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR
        if not contract:
            raise NotConfigured("base_rpc", "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR")
        start = self.settings.BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER
        config = scan_config(self.settings, cursors.SWAP_CURSOR, contract, [SWAP_TOPIC], start)
        handler = SwapHandler(self.engine, self.evm, self.settings, self.metrics, self.ratio, report)
        try:
            result = await LogScanner(self.engine, self.evm, self.metrics, config).run(handler, heartbeat, report)
        finally:
            await self._count_unattached()
        report.set_metadata("rows_inserted", result.inserted)
        report.set_metadata("payouts_created", handler.created)
        report.set_metadata("payouts_reattached", handler.reattached)
        log.info(
            "swap indexer: %d chunk(s), %d event(s), %d payout(s)", result.chunks, result.inserted, handler.created
        )
        return result.inserted

    async def _count_unattached(self) -> None:
        async with self.engine.connect() as conn:
            cursor = await cursors.get_block(conn, cursors.SWAP_CURSOR)
            if cursor is None:
                return
            n = await swap_payouts.count_unattached(conn, cursor, self.settings.BLOCKCHAIN_REORG_DEPTH_MAX)
        self.metrics.payouts_reorged_unattached.set(n)


__all__ = ["SWAP_TOPIC", "SwapHandler", "SwapIndexer", "decode_swap", "event_indexes"]
