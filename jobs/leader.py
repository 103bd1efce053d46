"""Leader election with a PostgreSQL session advisory lock on a dedicated, fenced session (SPEC §8).

Only the replica holding ``pg_try_advisory_lock(LOCK_KEY)`` runs jobs. The lock lives as long as its session, so
the lock session is a connection of its own (a ``NullPool`` engine: it never goes back to the application pool).

Fencing — why a partitioned leader stops before anyone else can start:

* The leader **proves** its lock session alive every ``proof_interval`` (≤ 5 s): a query on the lock session
  that also checks the lock is still granted to it. A proof that fails (connection closed or reset, lock gone)
  ends leadership at once.
* A **fence timer**, independent of the proof query (which may hang forever on a frozen connection), cancels the
  leader's jobs when no proof has succeeded for ``fence_after`` (10 s), counted from when the last successful
  proof was *sent*: the server finished that query later still, so the server's own timers below start later.
* PostgreSQL itself ends a cut-off lock session, which frees the lock: ``idle_session_timeout`` (20 s) ends a
  session whose client stopped sending while TCP stays up (a frozen proxy, a hung peer); TCP keepalives
  (5 s idle + 3 × 5 s probes) and ``tcp_user_timeout`` (20 s) end one whose network died. Proofs keep a healthy
  session busy every ≤ 5 s, far from 20 s. All are per-session settings sent at connect time.

So after a partition that begins at T the old leader has stopped by T + 10 s, PostgreSQL frees the lock no
earlier than 20 s after the last proof reached it (≥ T + 15 s in the worst case) and no later than T + 20 s,
and a standby, trying every ``min(INDEX_INTERVAL, 5 s)``, takes over by about T + 25 s (goal: 45 s).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from icy_backend.clients.errors import error_class

log = logging.getLogger(__name__)

LOCK_KEY = 0x4943_5942_4A4F_4253
"""Fixed 64-bit advisory lock key ("ICYBJOBS"); every replica of the service uses it."""

PROOF_INTERVAL_SECONDS = 5.0
"""The leader proves its lock session alive at least this often."""
FENCE_AFTER_SECONDS = 10.0
"""The leader stops its jobs when no proof has succeeded for this long."""
IDLE_SESSION_TIMEOUT_SECONDS = 20.0
"""PostgreSQL ends a lock session idle this long (the client stopped sending): it must exceed ``fence_after``."""
TCP_KEEPALIVES_IDLE, TCP_KEEPALIVES_INTERVAL, TCP_KEEPALIVES_COUNT = 5, 5, 3
"""Server-side keepalives: a dead peer is detected within 5 + 3 × 5 = 20 s of the last packet."""
TCP_USER_TIMEOUT_SECONDS = 20.0
"""Server-side: unacknowledged data for this long ends the connection (a partition while sending)."""
LOCK_CLOSE_SECONDS = 3.0
"""Bound on ending the lock session (SQLAlchemy tries a graceful close for 2 s, then aborts the socket)."""

_TRY_LOCK = text("SELECT pg_try_advisory_lock(CAST(:key AS bigint))")
# The lock is granted to this session: bigint keys are split into classid (high) and objid (low), objsubid 1.
_PROOF = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
    " AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid) AND objsubid = 1)"
)


# Seconds since the lock holder's session started its last query: a live leader proves every <= 5 s, so an
# old value means the lock is held by a session that is not leading (NULL when stats are not visible).
_HOLDER_QUERY_AGE = text(
    "SELECT EXTRACT(EPOCH FROM (clock_timestamp() - a.query_start)) FROM pg_locks l"
    " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.classid = CAST(:hi AS oid) AND l.objid = CAST(:lo AS oid) AND l.objsubid = 1"
)


def lock_session_settings(idle_session_timeout: float = IDLE_SESSION_TIMEOUT_SECONDS) -> dict[str, str]:
    """PostgreSQL run-time settings of the lock session (asyncpg ``server_settings``, sent at connect)."""
    return {
        "application_name": "icy-backend-job-leader",
        "idle_session_timeout": str(int(idle_session_timeout * 1000)),  # milliseconds
        "tcp_keepalives_idle": str(TCP_KEEPALIVES_IDLE),
        "tcp_keepalives_interval": str(TCP_KEEPALIVES_INTERVAL),
        "tcp_keepalives_count": str(TCP_KEEPALIVES_COUNT),
        "tcp_user_timeout": str(int(TCP_USER_TIMEOUT_SECONDS * 1000)),  # milliseconds
    }


def unsupported_setting(exc: BaseException) -> str | None:
    """The lock-session setting this PostgreSQL does not know (``idle_session_timeout`` needs PostgreSQL 14+)."""
    text_ = str(exc)
    if "unrecognized configuration parameter" not in text_:
        return None
    return next((name for name in lock_session_settings() if f'"{name}' in text_), None)


class LeaderLock:
    """One campaign = try the lock once; if won, run the leader's work until it returns, or is fenced."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        key: int = LOCK_KEY,
        proof_interval: float = PROOF_INTERVAL_SECONDS,
        fence_after: float = FENCE_AFTER_SECONDS,
        idle_session_timeout: float = IDLE_SESSION_TIMEOUT_SECONDS,
        connect_timeout: float = 3.0,
    ) -> None:
        if not 0 < proof_interval < fence_after < idle_session_timeout:
            raise ValueError("need 0 < proof_interval < fence_after < idle_session_timeout")
        self.key = key
        self.proof_interval = proof_interval
        self.fence_after = fence_after
        self.connect_timeout = connect_timeout
        # The lock session's own engine: same database, no pool, the fencing settings on every session.
        self.lock_engine = create_async_engine(
            engine.url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,
            connect_args={"timeout": connect_timeout, "server_settings": lock_session_settings(idle_session_timeout)},
        )
        self.backend_pid: int | None = None
        self.lost = False
        self.holder_alive = False
        """After a lost try: whether the session holding the lock proved itself recently (a live leader)."""
        self._key_parts = {"hi": key >> 32, "lo": key & 0xFFFFFFFF}
        self._proved_at = 0.0
        self._standby_conn: AsyncConnection | None = None

    def proven(self) -> bool:
        """Whether a proof succeeded within ``fence_after`` (only meaningful while leading)."""
        return anyio.current_time() - self._proved_at < self.fence_after

    async def aclose(self) -> None:
        """End the standby's session (if one is kept) and the lock engine."""
        if self._standby_conn is not None:
            conn, self._standby_conn = self._standby_conn, None
            await self._end(conn)
        await self.lock_engine.dispose()

    async def campaign(self, lead: Callable[[], Awaitable[None]], on_lost: Callable[[], None] | None = None) -> bool:
        """Try the lock; when won, run ``lead()`` until it returns or leadership is lost (or fenced).

        ``on_lost`` is called the moment the loss is detected (before the leader's work has unwound).
        Returns whether the lock was won. Database errors propagate (the caller retries later). A standby keeps
        its session between tries (one connection per replica, not one per try); any error ends it.
        """
        self.lost = False
        self.holder_alive = False
        conn, self._standby_conn = self._standby_conn, None
        if conn is None:
            with anyio.fail_after(self.connect_timeout + 1):
                conn = await self.lock_engine.connect()
        keep = False
        try:
            sent = anyio.current_time()
            # Bounded: a connection that froze right here must not hang the campaign (an unanswered lock
            # that the server did grant is freed by idle_session_timeout).
            with anyio.fail_after(self.proof_interval):
                won = bool(await conn.scalar(_TRY_LOCK, {"key": self.key}))
                if won:
                    self.backend_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
                else:
                    age = await conn.scalar(_HOLDER_QUERY_AGE, self._key_parts)
                    self.holder_alive = age is None or float(age) < 3 * self.proof_interval
            if not won:
                keep = True
                return False
            self._proved_at = sent
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._prove, conn, tg.cancel_scope, on_lost)
                tg.start_soon(self._fence, tg.cancel_scope, on_lost)
                await lead()
                tg.cancel_scope.cancel()
            return True
        finally:
            self.backend_pid = None
            if keep:
                self._standby_conn = conn
            else:
                await self._end(conn)

    @staticmethod
    async def _end(conn: AsyncConnection) -> None:
        """End a session that holds (or may hold) the lock, which frees the lock on the server. Never pooled;
        bounded and shielded, because on a frozen connection even the goodbye hangs."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(LOCK_CLOSE_SECONDS):
            await conn.invalidate()
            await conn.close()

    def _lose(self, reason: str, leader_scope: anyio.CancelScope, on_lost: Callable[[], None] | None) -> None:
        if self.lost:
            return
        self.lost = True
        log.warning("job leader lock lost (%s); cancelling jobs", reason)
        leader_scope.cancel()
        if on_lost is not None:
            on_lost()

    async def _prove(
        self, conn: AsyncConnection, leader_scope: anyio.CancelScope, on_lost: Callable[[], None] | None
    ) -> None:
        """Prove the lock session alive (and the lock still ours) every ``proof_interval``, from send to send."""
        params = self._key_parts
        while True:
            await anyio.sleep(max(0.0, self._proved_at + self.proof_interval - anyio.current_time()))
            sent = anyio.current_time()
            try:
                # No timeout of its own: a hanging proof is the fence timer's business.
                held = await conn.scalar(_PROOF, params)
            except Exception as exc:
                self._lose(error_class(exc), leader_scope, on_lost)
                return
            if not held:
                self._lose("lock_not_held", leader_scope, on_lost)
                return
            self._proved_at = sent

    async def _fence(self, leader_scope: anyio.CancelScope, on_lost: Callable[[], None] | None) -> None:
        """Stop the leader's work once no proof has succeeded for ``fence_after`` (whatever the proof is doing)."""
        while True:
            remaining = self._proved_at + self.fence_after - anyio.current_time()
            if remaining <= 0:
                self._lose(f"no proof for {self.fence_after:g} s", leader_scope, on_lost)
                return
            await anyio.sleep(remaining)
