"""Indexer cursors (``indexer_cursors``): the last fully scanned block, or the newest stored txid."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from icy_backend.db.tables import indexer_cursors
from icy_backend.db.types import utcnow

BTC_CURSOR = "btc_transaction_indexing"
ICY_CURSOR = "icy_transaction_indexing"
SWAP_CURSOR = "icy_swap_transaction_indexing"


async def get_block(conn: AsyncConnection, name: str) -> int | None:
    """The last fully scanned block of ``name``, or None before the first chunk is stored."""
    row = (await conn.execute(select(indexer_cursors.c.block_number).where(indexer_cursors.c.name == name))).first()
    return None if row is None or row[0] is None else int(row[0])


async def get_txid(conn: AsyncConnection, name: str) -> str | None:
    row = (await conn.execute(select(indexer_cursors.c.txid).where(indexer_cursors.c.name == name))).first()
    return None if row is None else row[0]


async def _upsert(conn: AsyncConnection, name: str, values: dict[str, Any]) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    stmt = insert(indexer_cursors).values(name=name, updated_at=now, **values)
    await conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={**values, "updated_at": now}))


async def set_block(conn: AsyncConnection, name: str, block: int) -> None:
    """Record ``block`` as fully scanned (call inside the transaction that stored the block's rows)."""
    await _upsert(conn, name, {"block_number": block})


async def set_txid(conn: AsyncConnection, name: str, txid: str) -> None:
    await _upsert(conn, name, {"txid": txid})


__all__ = ["BTC_CURSOR", "ICY_CURSOR", "SWAP_CURSOR", "get_block", "get_txid", "set_block", "set_txid"]
