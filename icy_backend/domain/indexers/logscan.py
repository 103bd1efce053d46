"""The reorg-aware ``eth_getLogs`` scan loop shared by the ICY-transfer and Swap indexers (SPEC §9).

One pass of an indexer:

1. **Head batch** (one endpoint, one JSON-RPC batch): the scan target (``eth_blockNumber`` minus
   ``BLOCKCHAIN_CONFIRMATIONS``, or the ``BLOCKCHAIN_FINALITY_TAG`` block) and the header of the cursor's block.
   A null header means that endpoint is behind, not a reorg: the pass stops and the next one retries. A header
   whose hash differs from the stored one is a **reorg**: the indexer asks the same kind of batch for the headers
   of its checkpoints, rolls back to the newest one that is still canonical (the handler deletes its rows above
   it; the cursor moves there), counts ``icy_backend_indexer_reorgs_total``, logs a WARNING and re-scans. When no
   checkpoint is canonical, or the reorg is provably deeper than ``BLOCKCHAIN_REORG_DEPTH_MAX``, the pass raises
   :class:`ReorgTooDeep` (the run fails, ``icy_backend_indexer_reorg_too_deep`` pages) instead of guessing.
2. **Chunks** ``[s, s+N-1]`` (inclusive, never overlapping; "range too large" halves N): each chunk's
   ``eth_getLogs``, the header of its last block and the scan target are read **in one batch from one
   endpoint**. A chunk whose last block that endpoint does not have (null header) or has not yet buried under
   the confirmations is not stored and the cursor does not move past it (fix: after a failover to a lagging node
   the cursor moved past Swap events that were never read). Logs marked ``removed`` are never stored.
3. The handler turns the chunk's logs into rows (network lookups first, outside the DB transaction; a lookup a
   node cannot answer yet stops the pass with :class:`NotReady`), then stores them, the cursor (number and hash
   of the chunk's last block) and a checkpoint in **one** DB transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.clients.errors import JsonRpcError
from icy_backend.clients.evm import Block, EvmRpcClient, Log, hex_int, parse_block, parse_log
from icy_backend.domain.indexers import cursors
from icy_backend.domain.indexers.cursors import BlockRef
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings

log = logging.getLogger(__name__)


class NotReady(Exception):
    """An endpoint cannot answer what a chunk needs yet (lagging node): stop the pass, retry on the next one."""


class ReorgTooDeep(Exception):
    """A reorg deeper than ``BLOCKCHAIN_REORG_DEPTH_MAX`` (or with no canonical checkpoint): a person decides."""


class Report(Protocol):
    """What an indexer reports to its runner (``jobs.context.JobContext`` is one)."""

    def item_succeeded(self) -> None: ...

    def item_failed(self, kind: str) -> None: ...

    def set_metadata(self, key: str, value: Any) -> None: ...


class Handler(Protocol):
    """The per-event part of an indexer."""

    chain: str  # metric label: icy / icy_swap

    async def prepare(self, logs: list[Log], header: Block) -> Any:
        """Network lookups for a chunk's logs (may raise :class:`NotReady`); returns what ``store`` needs."""

    async def store(self, conn: AsyncConnection, prepared: Any) -> int:
        """Insert the chunk's rows in ``conn`` (the cursor's transaction); returns rows inserted."""

    async def rollback(self, conn: AsyncConnection, fork: BlockRef) -> int:
        """Delete the rows of blocks above ``fork`` (a reorg); returns rows deleted."""


@dataclass(frozen=True)
class ScanConfig:
    cursor: str  # cursor and checkpoint name
    address: str
    topics: Sequence[Any]
    start: int  # first block when there is no cursor
    chunk_size: int
    confirmations: int
    finality_tag: str | None
    depth_max: int


def scan_config(settings: Settings, cursor: str, address: str, topics: Sequence[Any], start: int) -> ScanConfig:
    return ScanConfig(
        cursor=cursor,
        address=address,
        topics=topics,
        start=start,
        chunk_size=settings.BLOCKCHAIN_LOG_CHUNK_BLOCKS,
        confirmations=settings.BLOCKCHAIN_CONFIRMATIONS,
        finality_tag=settings.BLOCKCHAIN_FINALITY_TAG,
        depth_max=settings.BLOCKCHAIN_REORG_DEPTH_MAX,
    )


@dataclass
class ScanResult:
    inserted: int = 0
    chunks: int = 0
    last_block: int | None = None
    chunk_size: int = 0
    reorgs: int = 0
    stopped: str | None = None  # why the pass ended before the target (behind, not_ready), None when complete


class LogScanner:
    """Runs passes of one indexer: reorg check, then consistent chunks up to the target."""

    def __init__(self, engine: AsyncEngine, evm: EvmRpcClient, metrics: Metrics, config: ScanConfig) -> None:
        self.engine = engine
        self.evm = evm
        self.metrics = metrics
        self.config = config

    # ---- reads ----------------------------------------------------------------------------------------

    def _target_call(self) -> tuple[str, list[Any]]:
        if self.config.finality_tag:
            return ("eth_getBlockByNumber", [self.config.finality_tag, False])
        return ("eth_blockNumber", [])

    def _target(self, answer: Any) -> int:
        if self.config.finality_tag:
            if answer is None:
                return -1
            return parse_block(answer).number
        return hex_int(answer) - self.config.confirmations

    # ---- one pass ---------------------------------------------------------------------------------------

    async def run(self, handler: Handler, heartbeat: Callable[[], None], report: Report) -> ScanResult:
        cfg = self.config
        async with self.engine.connect() as conn:
            cursor = await cursors.get_block_ref(conn, cfg.cursor)
        result = ScanResult(chunk_size=cfg.chunk_size)
        calls = [self._target_call()]
        if cursor is not None and cursor.hash is not None:
            calls.append(("eth_getBlockByNumber", [hex(cursor.number), False]))
        head = await self.evm.batch(calls, op="indexer_head")
        target = self._target(head[0])
        if cursor is not None and cursor.hash is not None:
            if head[1] is None:
                log.info(
                    "%s indexer: the endpoint has not reached the cursor's block yet; retrying later", handler.chain
                )
                result.stopped = "behind"
                return result
            if parse_block(head[1]).hash != cursor.hash:
                fork = await self._rewind(handler, cursor, report)
                if fork is None:
                    result.stopped = "inconsistent"
                    return result
                cursor = None if fork.hash is None else fork
                result.reorgs += 1
        self.metrics.indexer_reorg_too_deep.labels(handler.chain).set(0)
        start = cursor.number + 1 if cursor is not None else cfg.start
        await self._chunks(handler, start, target, result, heartbeat, report)
        return result

    async def _chunks(
        self,
        handler: Handler,
        start: int,
        target: int,
        result: ScanResult,
        heartbeat: Callable[[], None],
        report: Report,
    ) -> None:
        cfg = self.config
        size = max(1, cfg.chunk_size)
        s = start
        while s <= target:
            e = min(s + size - 1, target)
            query = {"address": cfg.address, "topics": list(cfg.topics), "fromBlock": hex(s), "toBlock": hex(e)}
            calls = [self._target_call(), ("eth_getLogs", [query]), ("eth_getBlockByNumber", [hex(e), False])]
            try:
                answers = await self.evm.batch(calls, op="eth_getLogs")
            except JsonRpcError as exc:
                if exc.is_range_too_large and size > 1:
                    size = max(1, size // 2)
                    result.chunk_size = size
                    continue
                raise
            seen_target = self._target(answers[0])
            if answers[2] is None or seen_target < e:
                # This endpoint does not have block e, or has not buried it under the confirmations yet: its
                # logs for the range may be incomplete. Never store them; scan less, or wait for the next pass.
                if seen_target < s:
                    log.info("%s indexer: endpoint behind the next chunk; the cursor stays", handler.chain)
                    result.stopped = "behind"
                    return
                target = seen_target
                continue
            header = parse_block(answers[2])
            logs = [parse_log(entry) for entry in answers[1]]
            logs = [entry for entry in logs if not entry.removed]
            if any(not s <= entry.block_number <= e for entry in logs) or any(
                entry.block_number == e and entry.block_hash != header.hash for entry in logs
            ):
                log.warning("%s indexer: logs and header disagree (chain moving); retrying later", handler.chain)
                result.stopped = "inconsistent"
                return
            try:
                prepared = await handler.prepare(logs, header)
            except NotReady as exc:
                log.info("%s indexer: %s; the cursor stays, retrying later", handler.chain, exc)
                result.stopped = "not_ready"
                return
            async with self.engine.begin() as conn:
                result.inserted += await handler.store(conn, prepared)
                ref = BlockRef(e, header.hash)
                await cursors.set_block(conn, cfg.cursor, e, header.hash)
                await cursors.add_checkpoint(conn, cfg.cursor, ref, cfg.depth_max)
            result.chunks += 1
            result.last_block = e
            report.set_metadata("cursor_block", e)
            heartbeat()
            s = e + 1

    async def _rewind(self, handler: Handler, cursor: BlockRef, report: Report) -> BlockRef | None:
        """Roll back to the newest checkpoint that is still canonical (see the module docstring); None when the
        endpoint asked cannot tell (it lacks a block, or no longer sees the cursor's block replaced)."""
        cfg = self.config
        async with self.engine.connect() as conn:
            points = await cursors.checkpoints(conn, cfg.cursor, cursor.number)
        # The cursor's header again and every checkpoint's, in one batch: one endpoint's view of the chain.
        numbers = [cursor.number, *(p.number for p in points)]
        answers = await self.evm.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers], op="indexer_reorg")
        headers = [None if a is None else parse_block(a) for a in answers]
        if any(h is None for h in headers) or (headers[0] is not None and headers[0].hash == cursor.hash):
            log.warning(
                "%s indexer: endpoints disagree about a reorg below block %d; retrying", handler.chain, cursor.number
            )
            return None
        fork: BlockRef | None = None
        oldest_gone = cursor.number
        for point, header in zip(points, headers[1:], strict=True):
            assert header is not None
            if header.hash == point.hash:
                fork = point
                break
            oldest_gone = point.number
        depth_at_least = cursor.number - oldest_gone + 1
        if fork is None and cursor.number - cfg.start + 1 <= cfg.depth_max:
            # The indexer's whole history is younger than the reorg limit: start it over (nothing is guessed).
            fork = BlockRef(cfg.start - 1, None)
        if fork is None or depth_at_least > cfg.depth_max:
            self.metrics.indexer_reorg_too_deep.labels(handler.chain).set(1)
            log.error(
                "%s indexer: reorg deeper than BLOCKCHAIN_REORG_DEPTH_MAX=%d (at least %d blocks, or no canonical "
                "checkpoint): stopped, a person must look",
                handler.chain,
                cfg.depth_max,
                depth_at_least,
            )
            raise ReorgTooDeep(f"reorg of at least {depth_at_least} blocks")
        async with self.engine.begin() as conn:
            deleted = await handler.rollback(conn, fork)
            await cursors.drop_checkpoints_above(conn, cfg.cursor, fork.number)
            if fork.hash is None:
                await cursors.drop_cursor(conn, cfg.cursor)
            else:
                await cursors.set_block(conn, cfg.cursor, fork.number, fork.hash)
        self.metrics.indexer_reorgs.labels(handler.chain).inc()
        report.set_metadata("reorg_rolled_back_to", fork.number)
        log.warning(
            "%s indexer: reorg below block %d: rolled back to checkpoint %d (%d row(s) deleted), re-scanning",
            handler.chain,
            cursor.number,
            fork.number,
            deleted,
        )
        return fork


__all__ = ["Handler", "LogScanner", "NotReady", "ReorgTooDeep", "Report", "ScanConfig", "ScanResult", "scan_config"]
