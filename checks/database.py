"""The ``database`` check: ``SELECT 1`` on a pooled connection, with the real driver and pool numbers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from checks.model import HEALTHY, Check, Metadata, Outcome


def driver_name(engine: AsyncEngine) -> str:
    """``dialect+driver`` as in the URL, e.g. ``postgresql+asyncpg`` or ``sqlite+aiosqlite``."""
    return f"{engine.dialect.name}+{engine.dialect.driver}"


def _stat(pool: Any, name: str) -> int:
    method = getattr(pool, name, None)
    if not callable(method):
        return 0
    try:
        value = method()
    except Exception:  # a pool class without meaningful numbers
        return 0
    return max(0, int(value)) if isinstance(value, int) else 0


def pool_stats(engine: AsyncEngine) -> dict[str, int]:
    """``size``, ``checked_out`` and ``overflow`` of the engine's pool (0 where the pool has no such number).

    SQLAlchemy's ``overflow()`` counts up from ``-pool_size``; a negative value means no overflow, shown as 0.
    """
    pool = engine.pool
    return {
        "size": _stat(pool, "size"),
        "checked_out": _stat(pool, "checkedout"),
        "overflow": _stat(pool, "overflow"),
    }


def database_check(engine: AsyncEngine, *, timeout: float) -> Check:
    """Critical; the body is cancelled at the deadline, which releases (or discards) the pooled connection."""

    async def body(metadata: Metadata) -> Outcome:
        metadata["driver"] = driver_name(engine)
        metadata["connection_pool"] = pool_stats(engine)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        metadata["connection_pool"] = pool_stats(engine)
        return HEALTHY

    return Check("database", body, critical=True, timeout=timeout)
