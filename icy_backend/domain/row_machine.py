"""Plumbing shared by the two money state machines (BTC payouts and swap requests).

Each row moves by compare-and-set updates (``WHERE id = … AND status = <expected>``), every move is logged at INFO
without addresses or amounts, one item's unexpected error is that item's failure, and builds for one wallet never
interleave inside a process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.lowlevel
from sqlalchemy import ColumnElement, Table, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.db.types import utcnow

_PROCESS_LOCKS: dict[tuple[object, str], anyio.Lock] = {}

ItemHook = Callable[[str | None], None]
"""Called once per processed item: ``None`` for success, else the failure class."""

SKIPPED = "skipped"
"""Outcome of an item another processor had already taken (not counted)."""

Step = Callable[[int], Awaitable[str | None]]


class RowLog:
    """INFO lines about one kind of row (``payout 12: pending -> broadcasting``), ids and classes only."""

    def __init__(self, logger: logging.Logger, noun: str) -> None:
        self.logger = logger
        self.noun = noun

    def transition(self, row_id: int, old: str, new: str, reason: str | None = None) -> None:
        if reason:
            self.logger.info("%s %d: %s -> %s (%s)", self.noun, row_id, old, new, reason)
        else:
            self.logger.info("%s %d: %s -> %s", self.noun, row_id, old, new)

    def stays(self, row_id: int, status: str, reason: str) -> None:
        self.logger.info("%s %d: stays %s (%s)", self.noun, row_id, status, reason)

    async def guarded(self, row_id: int, step: Awaitable[str | None]) -> str | None:
        """Run one item's step; an unexpected error (a bug, the database) becomes that item's outcome class."""
        try:
            return await step
        except SQLAlchemyError:
            self.logger.warning("%s %d: database error", self.noun, row_id, exc_info=True)
            return "database_error"
        except Exception:
            self.logger.exception("%s %d: unexpected error", self.noun, row_id)
            return "internal_error"


def process_lock(owner: str) -> anyio.Lock:
    """One lock per event loop and owner (e.g. a wallet): SQLite has no row locks, and on PostgreSQL the
    advisory lock taken inside the transaction also covers other processes."""
    key = (anyio.lowlevel.current_token(), owner)
    lock = _PROCESS_LOCKS.get(key)
    if lock is None:
        lock = _PROCESS_LOCKS[key] = anyio.Lock()
    return lock


async def count_rows(engine: AsyncEngine, table: Table, statuses: Iterable[str]) -> int:
    """Rows of ``table`` in any of ``statuses`` (for the pending-transactions gauge)."""
    async with engine.connect() as conn:
        value = await conn.scalar(select(func.count()).select_from(table).where(table.c.status.in_(list(statuses))))
    return int(value or 0)


async def move_row(
    conn: AsyncConnection, table: Table, row_id: int, expected: str, *where: ColumnElement[Any], **values: Any
) -> bool:
    """Compare-and-set: update the row only while it is still ``expected`` (and matches ``where``); stamps
    ``updated_at``. False when another writer moved it first."""
    result = await conn.execute(
        update(table)
        .where(table.c.id == row_id, table.c.status == expected, *where)
        .values(**values, updated_at=utcnow())
    )
    return result.rowcount == 1


async def fail_row(
    conn: AsyncConnection, table: Table, row_id: int, expected: str, reason: str, *where: ColumnElement[Any]
) -> bool:
    """Move a row from ``expected`` to ``failed`` with ``reason``; False when another writer moved it first."""
    return await move_row(
        conn, table, row_id, expected, *where, status="failed", failure_reason=reason, processed_at=utcnow()
    )


async def ids_in(engine: AsyncEngine, table: Table, status: str) -> list[int]:
    """Ids of the rows in ``status``, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(table.c.id).where(table.c.status == status).order_by(table.c.id))
        return [int(r[0]) for r in rows]


async def run_queue(
    rows: RowLog,
    engine: AsyncEngine,
    table: Table,
    in_flight: str,
    reconcile: Step,
    process: Step,
    on_item: ItemHook | None,
) -> None:
    """One pass: settle every row left ``in_flight`` by an earlier run (before anything new is sent), then try
    every ``pending`` row once. Each item's outcome goes to ``on_item``; items another processor took are skipped.
    """
    for status, step in ((in_flight, reconcile), ("pending", process)):
        for row_id in await ids_in(engine, table, status):
            outcome = await rows.guarded(row_id, step(row_id))
            if outcome != SKIPPED and on_item is not None:
                on_item(outcome)
