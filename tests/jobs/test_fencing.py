"""Leader fencing (SPEC §8) on a real PostgreSQL, with the production timings.

The leader reaches PostgreSQL through a loopback TCP proxy that freezes (holds every byte, closes nothing: a
partition neither side can see); the standby connects directly. The old leader must stop its jobs before
PostgreSQL ends its session and frees the lock, and the standby must take over within 45 s.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from icy_backend.db.engine import make_engine
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from jobs.context import JobContext
from jobs.leader import FENCE_AFTER_SECONDS, IDLE_SESSION_TIMEOUT_SECONDS, LeaderLock, lock_session_settings
from jobs.runtime import JobRuntime
from tests.jobs.conftest import PG_URL, fast_settings, job, require_pg, running, wait_for
from tests.jobs.tcp_proxy import freezable_proxy
from tests.jobs.test_leader import lock_holder_pid

INDEX_INTERVAL = "5"  # production's proof interval and standby retry: min(INDEX_INTERVAL, 5 s) = 5 s


class Replica:
    """A job runtime whose jobs record when this replica last did any work and when its long job was cancelled."""

    def __init__(self, name: str, url: str, key: int) -> None:
        self.name = name
        self.settings = fast_settings(DATABASE_URL=url, INDEX_INTERVAL=INDEX_INTERVAL, SHUTDOWN_GRACE_SECONDS="1")
        self.engine = make_engine(self.settings)
        self.first_work: float | None = None
        self.last_work: float | None = None
        self.cancelled_at: float | None = None

        def worked() -> None:
            now = time.monotonic()
            self.first_work = self.first_work or now
            self.last_work = now

        async def short(ctx: JobContext) -> None:
            worked()

        async def long(ctx: JobContext) -> None:
            try:
                while True:
                    worked()
                    ctx.heartbeat()
                    await anyio.sleep(0.05)
            except anyio.get_cancelled_exc_class():
                self.cancelled_at = time.monotonic()
                raise

        self.runtime = JobRuntime(
            self.settings,
            Metrics(make_registry()),
            self.engine,
            Lifecycle(),
            None,
            [job("short", short, interval=0.1), job("long", long, interval=0.1, timeout=120, stall_after=60)],
            lock_key=key,
        )

    @property
    def leader(self) -> LeaderLock:
        assert self.runtime.leader is not None
        return self.runtime.leader


@asynccontextmanager
async def admin_engine() -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_lock_session_carries_the_fencing_settings() -> None:
    require_pg()
    leader = LeaderLock(make_engine(fast_settings(DATABASE_URL=PG_URL)))
    try:
        async with leader.lock_engine.connect() as conn:
            shown = {
                name: await conn.scalar(text(f"SELECT current_setting('{name}')")) for name in lock_session_settings()
            }
    finally:
        await leader.aclose()
    assert shown["idle_session_timeout"] == "20s"
    assert shown["tcp_keepalives_idle"] == "5"
    assert shown["tcp_keepalives_interval"] == "5"
    assert shown["tcp_keepalives_count"] == "3"
    assert shown["tcp_user_timeout"] == "20000"  # milliseconds
    # The ordering the fence relies on: it fires well before PostgreSQL frees the lock.
    assert FENCE_AFTER_SECONDS + 5 <= IDLE_SESSION_TIMEOUT_SECONDS <= 30


@pytest.mark.slow
@pytest.mark.anyio
async def test_frozen_leader_stops_before_postgres_frees_the_lock_and_a_standby_takes_over() -> None:
    require_pg()
    key = random.randint(1, 2**62)
    with anyio.fail_after(58):
        async with AsyncExitStack() as stack:
            admin = await stack.enter_async_context(admin_engine())
            proxy = await stack.enter_async_context(freezable_proxy("127.0.0.1", 5432))
            a = Replica("a", f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test", key)
            b = Replica("b", PG_URL, key)
            for replica in (a, b):
                stack.push_async_callback(replica.engine.dispose)

            await stack.enter_async_context(running(a.runtime))
            await wait_for(lambda: a.runtime.role == "leader", timeout=10)
            a_pid = a.leader.backend_pid
            await stack.enter_async_context(running(b.runtime))
            await wait_for(lambda: a.runtime.report().jobs["short"]["success_count"] >= 3)
            assert await lock_holder_pid(admin, key) == a_pid
            assert b.runtime.role == "standby" and b.first_work is None

            seen: dict[str, float] = {}

            async def watch() -> None:
                while True:
                    now = time.monotonic()
                    if "a_stopped" not in seen and not a.runtime.scheduler.active:
                        seen["a_stopped"] = now
                    if "freed" not in seen and await lock_holder_pid(admin, key) != a_pid:
                        seen["freed"] = time.monotonic()
                    if "b_leader" not in seen and b.runtime.role == "leader":
                        seen["b_leader"] = now
                    await anyio.sleep(0.05)

            proxy.freeze()
            frozen_at = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await wait_for(lambda: {"a_stopped", "freed", "b_leader"} <= set(seen), timeout=50, step=0.1)
                await wait_for(lambda: b.first_work is not None, timeout=2)
                tg.cancel_scope.cancel()

            since = {k: round(v - frozen_at, 2) for k, v in seen.items()}
            # The old leader's fence stopped its jobs within 10 s of the partition (proofs every 5 s) ...
            assert since["a_stopped"] <= FENCE_AFTER_SECONDS + 1.5, since  # 10 s after the last proof, plus a busy loop
            assert a.cancelled_at is not None and a.cancelled_at <= seen["a_stopped"]
            assert a.runtime.role == "standby"
            # ... before PostgreSQL itself ended the frozen session (idle_session_timeout) and freed the lock,
            assert seen["a_stopped"] + 3 < seen["freed"], since
            assert since["freed"] <= 30, since
            # ... and the standby took over within 45 s, and never worked while the old leader still did.
            assert since["b_leader"] <= 45, since
            assert a.last_work is not None and b.first_work is not None
            # The standby works only once it holds the lock (after PostgreSQL freed it); "freed" is when the watcher
            # *noticed* it (one admin query later), so it is compared with the old leader's stop, not b's first work.
            assert a.last_work < seen["a_stopped"] < b.first_work
            assert seen["a_stopped"] < seen["freed"]
            assert await lock_holder_pid(admin, key) == b.leader.backend_pid


@pytest.mark.anyio
async def test_no_run_starts_once_leadership_is_unproven_even_before_the_fence_fires() -> None:
    """An event loop blocked past the fence wakes the job loops and the fence timer together: the loops must not
    start runs in between. Simulated by ageing the last proof while the fence timer still sleeps."""
    require_pg()
    replica = Replica("a", PG_URL, random.randint(1, 2**62))
    starts: list[float] = []
    replica.runtime.scheduler.definitions["short"] = job("short", lambda ctx: _record(starts), interval=0.05)
    try:
        async with running(replica.runtime):
            await wait_for(lambda: replica.runtime.role == "leader", timeout=10)
            await wait_for(lambda: len(starts) >= 2)
            replica.leader._proved_at -= FENCE_AFTER_SECONDS  # the fence timer sleeps until its old deadline
            assert not replica.leader.proven()
            aged = len(starts)
            await anyio.sleep(0.5)
            assert len(starts) <= aged + 1  # at most a run already starting; none after
            assert replica.runtime.role == "leader"  # the fence itself has not fired yet
    finally:
        await replica.engine.dispose()


async def _record(starts: list[float]) -> None:
    starts.append(time.monotonic())


@pytest.mark.anyio
async def test_a_postgres_without_a_fencing_setting_is_reported_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL < 14 has no idle_session_timeout: the lock session cannot open, nobody leads, the log says why."""
    require_pg()
    real = lock_session_settings()
    # A setting no PostgreSQL knows stands in for idle_session_timeout on PostgreSQL 13.
    monkeypatch.setattr(
        "jobs.leader.lock_session_settings",
        lambda idle_session_timeout=20.0: {**real, "idle_session_timeout_v99": "1"},
    )
    replica = Replica("a", PG_URL, random.randint(1, 2**62))
    try:
        async with running(replica.runtime):
            await wait_for(lambda: "PostgreSQL 14+ is required" in caplog.text, timeout=5)
            assert replica.runtime.role == "standby"
    finally:
        await replica.engine.dispose()
    assert "PostgreSQL does not know idle_session_timeout" in caplog.text
