"""``/livez`` follows the job runtime: a dead or stuck scheduler fails it, a clean shutdown does not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.utils import LifespanFailureError
from starlette.applications import Starlette

from icy_backend.db.engine import make_engine
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics
from icy_backend.routes import jobs_health, liveness
from jobs.runtime import JobRuntime
from tests.jobs.conftest import fast_settings, job, make_runtime, noop, running, sample, wait_for
from tests.jobs.test_jobs_health import _free_port, _wait_up

RUNS = "icy_backend_background_job_runs_total"


@asynccontextmanager
async def serving_app(
    runtime: JobRuntime, sibling: Callable[[], Coroutine[Any, Any, None]] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Hypercorn on loopback; the lifespan runs ``runtime`` and ``sibling`` in one task group, like the app's."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.run)
            if sibling is not None:
                tg.start_soon(sibling)
            yield {"jobs": runtime, "lifecycle": runtime.lifecycle}
            runtime.lifecycle.begin_drain()
            tg.cancel_scope.cancel()

    app = Starlette(routes=[*liveness.routes, *jobs_health.routes], lifespan=lifespan)
    config = Config()
    port = _free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await _wait_up(client)
            try:
                yield client
            finally:
                stop.set()


@pytest.mark.anyio
async def test_a_scheduler_whose_task_group_ended_fails_livez(metrics: Metrics) -> None:
    """A crashed sibling ends the lifespan's task group; hypercorn keeps serving, /livez must say 503."""
    crash = anyio.Event()

    async def buggy_sibling() -> None:
        await crash.wait()
        raise RuntimeError("a bug in another background task")

    runtime = make_runtime(metrics, [job("j", noop, interval=0.05)])
    answers: dict[str, tuple[int, Any]] = {}
    # Hypercorn reports the crashed lifespan when it shuts down: that error is expected, nothing else.

    async def scenario() -> None:
        async with serving_app(runtime, buggy_sibling) as client:
            await wait_for(lambda: sample(metrics, RUNS, job_name="j", status="success") >= 1)
            before = await client.get("/livez")
            answers["before"] = (before.status_code, before.json())
            crash.set()
            await wait_for(lambda: not runtime.scheduler.active)
            runs = sample(metrics, RUNS, job_name="j", status="success")
            await anyio.sleep(0.2)
            answers["runs_after"] = (int(sample(metrics, RUNS, job_name="j", status="success") - runs), None)
            for path in ("/livez", "/healthz"):
                response = await client.get(path)
                answers[path] = (response.status_code, response.json())

    with pytest.raises(BaseExceptionGroup) as info:
        await scenario()
    assert info.group_contains(LifespanFailureError, depth=1)
    assert not info.group_contains(AssertionError)
    assert answers["before"] == (200, {"message": "ok"})
    assert answers["runs_after"][0] == 0  # no job runs any more
    for path in ("/livez", "/healthz"):
        assert answers[path] == (503, {"message": "unhealthy", "failed": ["job_scheduler"]}), path


@pytest.mark.anyio
async def test_a_scheduler_that_raised_fails_liveness(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = make_runtime(metrics, [job("j", noop, interval=0.05)])

    def broken() -> None:
        raise RuntimeError("bug in the scheduler's own loop")

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.run)
            await wait_for(lambda: runtime.statuses()["j"]["success_count"] >= 1)
            monkeypatch.setattr(runtime.board, "prune", broken)  # the watchdog calls it every period
            await anyio.sleep(1)

    with pytest.raises(BaseExceptionGroup) as info:
        await scenario()
    assert info.group_contains(RuntimeError, match="scheduler's own loop")
    assert not runtime.alive()
    assert runtime.lifecycle.dead_parts() == ["job_scheduler"]


@pytest.mark.anyio
async def test_clean_shutdown_and_restart_keep_livez_ok(metrics: Metrics) -> None:
    lifecycle = Lifecycle()
    runtime = JobRuntime(fast_settings(), metrics, None, lifecycle, None, [job("j", noop, interval=0.05)])
    async with running(runtime):
        await wait_for(lambda: runtime.statuses()["j"]["success_count"] >= 1)
        assert lifecycle.dead_parts() == []
    assert lifecycle.dead_parts() == []  # stopped after begin_drain: shutdown, not death


@pytest.mark.anyio
async def test_one_stuck_job_loop_fails_livez(metrics: Metrics) -> None:
    """A loop whose next tick is overdue by more than interval + grace is stuck: the job is late, /livez 503."""
    runtime = make_runtime(metrics, [job("stuck", noop, interval=5), job("fine", noop, interval=0.05)], late_grace=0.1)
    async with serving_app(runtime) as client:
        await wait_for(lambda: runtime.statuses()["stuck"]["success_count"] >= 1)
        assert (await client.get("/livez")).status_code == 200
        # The "stuck" loop sleeps for 5 s; pretend its tick was due 6 s ago (interval 5 + grace 0.1 overdue).
        runtime.board.set_next_run("stuck", time.monotonic() - 5.2)
        response = await client.get("/livez")
        assert response.status_code == 503
        assert response.json()["failed"] == ["job_scheduler"]
        body = (await client.get("/api/v1/health/jobs")).json()
        assert body["jobs"]["stuck"]["late"] is True
        assert body["jobs"]["fine"]["late"] is False
        assert body["summary"]["late_jobs"] == 1
        assert body["status"] == "degraded"


@pytest.mark.anyio
async def test_standby_without_any_leader_for_three_intervals_is_degraded(metrics: Metrics) -> None:
    """A standby that cannot see a leader (here: its database is unreachable) reports leader none."""
    settings = fast_settings(INDEX_INTERVAL="0.2", DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/none")
    engine = make_engine(settings)
    runtime = JobRuntime(settings, metrics, engine, Lifecycle(), None, [job("j", noop)])
    try:
        async with serving_app(runtime) as client:
            body = (await client.get("/api/v1/health/jobs")).json()
            assert (body["status"], body["role"], body["summary"]["leader"]) == ("healthy", "standby", "other")
            await anyio.sleep(3 * 0.2 + 0.1)
            response = await client.get("/api/v1/health/jobs")
            body = response.json()
            assert response.status_code == 200
            assert (body["status"], body["role"], body["summary"]["leader"]) == ("degraded", "standby", "none")
            assert (await client.get("/livez")).status_code == 200  # no leader is not this pod's death
    finally:
        await engine.dispose()
