"""Indexer cursors (``indexer_cursors``) and checkpoints (``indexer_checkpoints``).

A cursor is the last fully scanned block (number and hash) of an EVM indexer, or the newest stored txid of the
BTC one. Checkpoints are the number and hash of the last block of every chunk an EVM indexer scanned, kept for
the last ``BLOCKCHAIN_REORG_DEPTH_MAX`` blocks plus the newest one below them (so a fork point can always be
looked for, however large the chunks are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from icy_backend.db.tables import indexer_checkpoints, indexer_cursors
from icy_backend.db.types import utcnow

BTC_CURSOR = "btc_transaction_indexing"
ICY_CURSOR = "icy_transaction_indexing"
SWAP_CURSOR = "icy_swap_transaction_indexing"


@dataclass(frozen=True)
class BlockRef:
    """A block by number and hash (hash None: a cursor stored before hashes were kept)."""

    number: int
    hash: str | None


async def get_block(conn: AsyncConnection, name: str) -> int | None:
    """The last fully scanned block of ``name``, or None before the first chunk is stored."""
    ref = await get_block_ref(conn, name)
    return None if ref is None else ref.number


async def get_block_ref(conn: AsyncConnection, name: str) -> BlockRef | None:
    query = select(indexer_cursors.c.block_number, indexer_cursors.c.block_hash).where(indexer_cursors.c.name == name)
    row = (await conn.execute(query)).first()
    return None if row is None or row[0] is None else BlockRef(int(row[0]), row[1])


async def get_txid(conn: AsyncConnection, name: str) -> str | None:
    row = (await conn.execute(select(indexer_cursors.c.txid).where(indexer_cursors.c.name == name))).first()
    return None if row is None else row[0]


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def _upsert(conn: AsyncConnection, name: str, values: dict[str, Any]) -> None:
    now = utcnow()
    stmt = _insert(conn)(indexer_cursors).values(name=name, updated_at=now, **values)
    await conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={**values, "updated_at": now}))


async def set_block(conn: AsyncConnection, name: str, block: int, block_hash: str | None = None) -> None:
    """Record ``block`` as fully scanned (call inside the transaction that stored the block's rows)."""
    await _upsert(conn, name, {"block_number": block, "block_hash": block_hash})


async def drop_cursor(conn: AsyncConnection, name: str) -> None:
    """Forget ``name``'s cursor: its next pass starts at its first block."""
    await conn.execute(delete(indexer_cursors).where(indexer_cursors.c.name == name))


async def set_txid(conn: AsyncConnection, name: str, txid: str) -> None:
    await _upsert(conn, name, {"txid": txid})


async def add_checkpoint(conn: AsyncConnection, name: str, block: BlockRef, depth_max: int) -> None:
    """Store ``block`` as a checkpoint and prune those older than ``depth_max`` blocks (keeping one below)."""
    assert block.hash is not None
    stmt = _insert(conn)(indexer_checkpoints).values(name=name, block_number=block.number, block_hash=block.hash)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["name", "block_number"], set_={"block_hash": block.hash})
    )
    floor = block.number - depth_max
    older = indexer_checkpoints.c.block_number < floor
    mine = indexer_checkpoints.c.name == name
    newest_below = (
        await conn.execute(select(func.max(indexer_checkpoints.c.block_number)).where(mine, older))
    ).scalar()
    if newest_below is not None:
        await conn.execute(delete(indexer_checkpoints).where(mine, indexer_checkpoints.c.block_number < newest_below))


async def checkpoints(conn: AsyncConnection, name: str, below: int) -> list[BlockRef]:
    """The checkpoints of ``name`` below block ``below``, newest first."""
    query = (
        select(indexer_checkpoints.c.block_number, indexer_checkpoints.c.block_hash)
        .where(and_(indexer_checkpoints.c.name == name, indexer_checkpoints.c.block_number < below))
        .order_by(indexer_checkpoints.c.block_number.desc())
    )
    return [BlockRef(int(n), h) for n, h in (await conn.execute(query)).all()]


async def drop_checkpoints_above(conn: AsyncConnection, name: str, block: int) -> None:
    where = and_(indexer_checkpoints.c.name == name, indexer_checkpoints.c.block_number > block)
    await conn.execute(delete(indexer_checkpoints).where(where))


__all__ = [
    "BTC_CURSOR",
    "ICY_CURSOR",
    "SWAP_CURSOR",
    "BlockRef",
    "add_checkpoint",
    "checkpoints",
    "drop_checkpoints_above",
    "drop_cursor",
    "get_block",
    "get_block_ref",
    "get_txid",
    "set_block",
    "set_txid",
]
