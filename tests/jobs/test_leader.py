"""Leader election on a real PostgreSQL: one replica runs jobs; killing its lock connection fails over."""

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
from jobs.runtime import JobRuntime
from tests.jobs.conftest import PG_URL, fast_settings, job, noop, require_pg, running, sample, wait_for
from tests.jobs.test_jobs_health import serving

INTERVAL = 0.5  # lock retry interval (INDEX_INTERVAL); jobs themselves tick every 0.1 s
LEADER = "icy_backend_job_leader"


class Replica:
    def __init__(self, name: str, engine: AsyncEngine, key: int) -> None:
        self.name = name
        self.metrics = Metrics(make_registry())
        self.runs = 0
        self.long_cancelled = 0
        settings = fast_settings(INDEX_INTERVAL=str(INTERVAL), DATABASE_URL=PG_URL)

        async def count(ctx: JobContext) -> None:
            self.runs += 1

        async def long(ctx: JobContext) -> None:
            try:
                while True:
                    await anyio.sleep(0.05)
                    ctx.heartbeat()
            except anyio.get_cancelled_exc_class():
                self.long_cancelled += 1
                raise

        self.runtime = JobRuntime(
            settings,
            self.metrics,
            engine,
            Lifecycle(),
            None,
            [job("count", count, interval=0.1), job("long", long, interval=0.1, timeout=60)],
            lock_key=key,
        )


@asynccontextmanager
async def pg_engines(n: int) -> AsyncIterator[list[AsyncEngine]]:
    require_pg()
    settings = fast_settings(DATABASE_URL=PG_URL)
    engines = [make_engine(settings) for _ in range(n)]
    try:
        yield engines
    finally:
        for engine in engines:
            await engine.dispose()


async def lock_holder_pid(admin: AsyncEngine, key: int) -> int | None:
    async with admin.connect() as conn:
        pid = await conn.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid) AND objsubid = 1"
            ),
            {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
        )
        return None if pid is None else int(pid)


@pytest.mark.anyio
async def test_one_leader_runs_jobs_and_a_killed_lock_connection_fails_over() -> None:
    key = random.randint(1, 2**62)
    async with pg_engines(2) as (engine_a, engine_b), AsyncExitStack() as stack:
        admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        stack.push_async_callback(admin.dispose)
        a = Replica("a", engine_a, key)
        b = Replica("b", engine_b, key)
        await stack.enter_async_context(running(a.runtime))
        await wait_for(lambda: a.runtime.role == "leader", timeout=5)
        client = await stack.enter_async_context(serving(b.runtime))
        started = time.monotonic()

        await wait_for(lambda: a.runs >= 3)
        await anyio.sleep(2 * INTERVAL)  # b retried the lock at least once meanwhile
        assert b.runtime.leader is not None
        session = b.runtime.leader._standby_conn
        assert session is not None
        await anyio.sleep(2 * INTERVAL)
        assert b.runtime.leader._standby_conn is session  # one session for all of a standby's tries
        assert (a.runtime.role, b.runtime.role) == ("leader", "standby")
        assert b.runs == 0  # exactly one replica runs jobs
        assert (sample(a.metrics, LEADER), sample(b.metrics, LEADER)) == (1, 0)
        await anyio.sleep(max(0.0, 3 * INTERVAL + 0.2 - (time.monotonic() - started)))
        response = await client.get("/api/v1/health/jobs")
        assert response.status_code == 200
        body = response.json()
        # Past 3 intervals, the standby still sees a live leader (its tries fail against a proving session).
        assert (body["status"], body["role"], body["summary"]["leader"]) == ("healthy", "standby", "other")

        pid = await lock_holder_pid(admin, key)
        assert pid is not None and pid == a.runtime.leader.backend_pid  # type: ignore[union-attr]
        async with admin.connect() as conn:
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killed = time.monotonic()

        await wait_for(lambda: b.runtime.role == "leader", timeout=2 * INTERVAL + 1)
        assert time.monotonic() - killed <= 2 * INTERVAL + 0.2  # within two intervals (plus query time)
        await wait_for(lambda: a.runtime.role == "standby", timeout=2)
        assert a.long_cancelled == 1  # losing the connection cancelled the running job
        assert sample(a.metrics, LEADER) == 0
        await wait_for(lambda: b.runs >= 3)
        a_runs = a.runs
        await anyio.sleep(3 * INTERVAL)
        assert a.runs == a_runs  # the old leader stays standby: b holds the lock
        assert (a.runtime.role, b.runtime.role) == ("standby", "leader")
        new_pid = await lock_holder_pid(admin, key)
        assert new_pid == b.runtime.leader.backend_pid
        response = await client.get("/api/v1/health/jobs")
        assert response.json()["role"] == "leader"


@pytest.mark.anyio
async def test_shutdown_releases_the_lock() -> None:
    key = random.randint(1, 2**62)
    async with pg_engines(1) as (engine,):
        admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        try:
            replica = Replica("a", engine, key)
            async with running(replica.runtime):
                await wait_for(lambda: replica.runtime.role == "leader", timeout=5)
                assert await lock_holder_pid(admin, key) is not None
            assert replica.runtime.role == "standby"
            assert sample(replica.metrics, LEADER) == 0
            # The lock connection was closed, not returned to the pool still holding the lock.
            assert await lock_holder_pid(admin, key) is None
        finally:
            await admin.dispose()


@pytest.mark.anyio
async def test_sqlite_runs_single() -> None:
    settings = fast_settings(DATABASE_URL="sqlite+aiosqlite:///:memory:")
    engine = make_engine(settings)
    metrics = Metrics(make_registry())
    runtime = JobRuntime(settings, metrics, engine, Lifecycle(), None, [job("j", noop)])
    try:
        async with running(runtime):
            assert runtime.role == "single"
            assert sample(metrics, LEADER) == 1
            await wait_for(lambda: runtime.statuses()["j"]["success_count"] >= 1)
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_a_lock_held_by_a_session_that_does_not_lead_is_no_leader() -> None:
    """A session holding the lock but never proving (a stale or foreign session): the standby cannot take the
    lock, and after 3 intervals reports degraded with leader none instead of healthy."""
    key = random.randint(1, 2**62)
    async with pg_engines(1) as (engine,), AsyncExitStack() as stack:
        admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        stack.push_async_callback(admin.dispose)
        squatter = await stack.enter_async_context(admin.connect())
        assert await squatter.scalar(text("SELECT pg_try_advisory_lock(CAST(:key AS bigint))"), {"key": key})
        b = Replica("b", engine, key)
        client = await stack.enter_async_context(serving(b.runtime))
        # The squatter's last query ages past 3 proof intervals, then 3 more intervals pass without a leader.
        await wait_for(lambda: b.runtime.leader_missing(), timeout=3 * 3 * INTERVAL + 1)
        response = await client.get("/api/v1/health/jobs")
        body = response.json()
        assert response.status_code == 200
        assert (body["status"], body["role"], body["summary"]["leader"]) == ("degraded", "standby", "none")
        assert b.runs == 0
        await squatter.invalidate()  # the session ends, the lock is free: the standby takes it
        await wait_for(lambda: b.runtime.role == "leader", timeout=2 * INTERVAL + 1)
        assert (await client.get("/api/v1/health/jobs")).json()["summary"]["leader"] == "self"
