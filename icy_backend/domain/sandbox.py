"""Sandbox seeding: register the simulators' locked-treasury address so the oracle excludes its ICY."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.engine import insert_ignore
from icy_backend.db.tables import icy_locked_treasuries
from icy_backend.db.types import utcnow


async def seed_locked_treasuries(engine: AsyncEngine, addresses: Iterable[str]) -> int:
    """Insert each address once (idempotent: the address is unique); returns how many were new."""
    now = utcnow()
    rows = [{"address": a, "created_at": now, "updated_at": now} for a in dict.fromkeys(addresses)]
    if not rows:
        return 0
    stmt = insert_ignore(engine, icy_locked_treasuries).returning(icy_locked_treasuries.c.id)
    async with engine.begin() as conn:
        result = await conn.execute(stmt, rows)
        return len(result.all())


__all__ = ["seed_locked_treasuries"]
