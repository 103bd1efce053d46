"""Chunked ``eth_getLogs`` scanning shared by the ICY-transfer and Swap indexers (SPEC §9).

Ranges are inclusive and never overlap: ``[s, s+N-1]``, then ``[s+N, ...]`` (fix: the old ranges shared a
block, so a log on the boundary was indexed twice and the UNIQUE violation aborted the batch). A node answering
"range too large" gets half the range, until it accepts; the smaller size is kept for the rest of the run.
Each chunk's rows and the cursor (last fully scanned block) are stored in one DB transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from icy_backend.clients.errors import JsonRpcError
from icy_backend.clients.evm import EvmRpcClient, Log, parse_block
from jobs.context import JobContext

BATCH = 50  # JSON-RPC batch size for block headers


@dataclass
class ScanResult:
    inserted: int = 0
    chunks: int = 0
    last_block: int | None = None
    chunk_size: int = 0


async def scan_logs(
    evm: EvmRpcClient,
    address: str,
    topics: Sequence[Any],
    start: int,
    end: int,
    chunk_size: int,
    store: Callable[[list[Log], int], Awaitable[int]],
    ctx: JobContext,
) -> ScanResult:
    """Scan ``[start, end]`` in chunks; ``store(logs, chunk_end)`` persists a chunk and returns rows inserted."""
    result = ScanResult(chunk_size=chunk_size)
    size = max(1, chunk_size)
    s = start
    while s <= end:
        e = min(s + size - 1, end)
        try:
            logs = await evm.get_logs(address, topics, s, e)
        except JsonRpcError as exc:
            if exc.is_range_too_large and size > 1:
                size = max(1, size // 2)
                result.chunk_size = size
                continue
            raise
        result.inserted += await store([log for log in logs if not log.removed], e)
        result.chunks += 1
        result.last_block = e
        ctx.heartbeat()
        s = e + 1
    return result


class BlockTimes:
    """Block timestamps, fetched in JSON-RPC batches and cached for the run."""

    def __init__(self, evm: EvmRpcClient) -> None:
        self.evm = evm
        self.times: dict[int, int | None] = {}

    async def fetch(self, numbers: set[int]) -> dict[int, int | None]:
        missing = sorted(n for n in numbers if n not in self.times)
        for i in range(0, len(missing), BATCH):
            part = missing[i : i + BATCH]
            answers = await self.evm.batch(
                [("eth_getBlockByNumber", [hex(n), False]) for n in part], op="eth_getBlockByNumber"
            )
            for n, answer in zip(part, answers, strict=True):
                self.times[n] = parse_block(answer).timestamp if answer else None
        return {n: self.times.get(n) for n in numbers}


__all__ = ["BlockTimes", "ScanResult", "scan_logs"]
