"""Leader election with a PostgreSQL session advisory lock on a dedicated connection (SPEC §8).

Only the replica holding ``pg_try_advisory_lock(LOCK_KEY)`` runs jobs. The lock lives as long as the session,
so the lock connection never goes back to the pool (it is invalidated when leadership ends) and is probed with
a cheap query; when the probe fails (connection terminated, network gone) leadership is lost and the leader's
work is cancelled at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.clients.errors import error_class

log = logging.getLogger(__name__)

LOCK_KEY = 0x4943_5942_4A4F_4253
"""Fixed 64-bit advisory lock key ("ICYBJOBS"); every replica of the service uses it."""


class LeaderLock:
    """One campaign = try the lock once; if won, run the leader's work until cancelled or the lock is lost."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        key: int = LOCK_KEY,
        keepalive_interval: float = 5.0,
        keepalive_timeout: float = 5.0,
    ) -> None:
        self.engine = engine
        self.key = key
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.backend_pid: int | None = None
        self.lost = False

    async def campaign(self, lead: Callable[[], Awaitable[None]], on_lost: Callable[[], None] | None = None) -> bool:
        """Try the lock; when won, run ``lead()`` until it returns or the lock connection is lost.

        ``on_lost`` is called the moment the loss is detected (before the leader's work has unwound).
        Returns whether the lock was won. Database errors propagate (the caller retries later).
        """
        self.lost = False
        conn = await self.engine.connect()
        won = False
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            won = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(CAST(:key AS bigint))"), {"key": self.key}))
            if not won:
                return False
            self.backend_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keepalive, conn, tg.cancel_scope, on_lost)
                await lead()
                tg.cancel_scope.cancel()
            return True
        finally:
            self.backend_pid = None
            with anyio.CancelScope(shield=True):
                if won:
                    # Never hand a session that holds (or may hold) the lock back to the pool: close it,
                    # which releases the lock on the server.
                    await conn.invalidate()
                await conn.close()

    async def _keepalive(
        self, conn: AsyncConnection, leader_scope: anyio.CancelScope, on_lost: Callable[[], None] | None
    ) -> None:
        while True:
            await anyio.sleep(self.keepalive_interval)
            try:
                with anyio.fail_after(self.keepalive_timeout):
                    await conn.scalar(text("SELECT 1"))
            except Exception as exc:
                self.lost = True
                log.warning("job leader lock connection lost (%s); cancelling jobs", error_class(exc))
                leader_scope.cancel()
                if on_lost is not None:
                    on_lost()
                return
