"""Status tracking: stalled vs heartbeating runs, lateness, retention, liveness of a stuck scheduler."""

from __future__ import annotations

import time

import anyio
import pytest

from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics
from jobs.context import JobContext
from jobs.runtime import JobRuntime
from jobs.status import StatusBoard
from tests.jobs.conftest import fast_settings, job, make_runtime, noop, running, sample, wait_for

STALLED = "icy_backend_background_jobs_stalled"


class FakeClock:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.mark.anyio
async def test_hanging_job_is_stalled_but_a_long_heartbeating_job_is_not(metrics: Metrics) -> None:
    seen_heartbeating: set[str] = set()

    async def hangs(ctx: JobContext) -> None:
        await anyio.sleep(30)

    async def long_but_alive(ctx: JobContext) -> None:
        for _ in range(200):
            await anyio.sleep(0.03)
            ctx.heartbeat()

    runtime = make_runtime(
        metrics,
        [
            job("hangs", hangs, interval=5, timeout=20, stall_after=0.2),
            job("busy", long_but_alive, interval=5, timeout=20, stall_after=0.2),
        ],
    )
    async with running(runtime):
        await wait_for(lambda: runtime.statuses()["hangs"]["status"] == "stalled")
        # The gauge shows the current count, and stays there (it is not a per-tick delta).
        for _ in range(5):
            await anyio.sleep(0.1)
            report = runtime.report()
            seen_heartbeating.add(report.jobs["busy"]["status"])
            assert report.jobs["hangs"]["status"] == "stalled"
            assert report.summary["stalled_jobs"] == 1
            assert report.summary["running_jobs"] == 1
            assert report.status == "unhealthy"
            assert sample(metrics, STALLED) == 1
    assert seen_heartbeating == {"running"}
    assert sample(metrics, STALLED) == 0  # nothing runs any more


@pytest.mark.anyio
async def test_stalled_gauge_is_updated_by_the_scheduler_without_reads(metrics: Metrics) -> None:
    async def hangs(ctx: JobContext) -> None:
        await anyio.sleep(30)

    runtime = make_runtime(metrics, [job("hangs", hangs, interval=0.1, timeout=20, stall_after=0.15)])
    async with running(runtime):
        await wait_for(lambda: sample(metrics, STALLED) == 1)


def test_late_detection_with_a_fake_clock() -> None:
    clock = FakeClock()
    board = StatusBoard(wall=lambda: clock.wall, monotonic=lambda: clock.mono)
    board.register(job("j", noop, interval=60))
    board.scheduler_start()
    board.set_next_run("j", clock.mono + 60)
    clock.advance(60)
    board.run_started("j", JobContext("j"))
    board.run_finished("j", "success", 0.5)
    assert board.report().status == "healthy"
    # The loop should have ticked at +60 and set the next run to +120; it did not (stuck loop).
    clock.advance(60 + 30)  # exactly interval + grace overdue: not late yet
    assert board.late_count() == 0
    clock.advance(1)
    report = board.report()
    assert board.late_count() == 1
    assert report.summary["late_jobs"] == 1
    assert report.jobs["j"]["late"] is True
    assert report.status == "degraded"
    assert report.http_status == 200
    # A standby does not judge (the leader reports the jobs).
    assert board.report(apply_rules=False).status == "healthy"


def test_never_ran_two_intervals_after_startup_is_degraded() -> None:
    clock = FakeClock()
    board = StatusBoard(wall=lambda: clock.wall, monotonic=lambda: clock.mono)
    board.register(job("j", noop, interval=10))
    board.scheduler_start()
    clock.advance(19)
    assert board.report().status == "healthy"
    clock.advance(2)
    assert board.report().status == "degraded"


def test_three_consecutive_failures_of_a_critical_job_are_unhealthy() -> None:
    clock = FakeClock()
    board = StatusBoard(wall=lambda: clock.wall, monotonic=lambda: clock.mono)
    board.register(job("critical", noop, interval=10))
    board.register(job("optional", noop, interval=10, critical=False))
    board.scheduler_start()
    for name in ("critical", "optional"):
        board.run_started(name, JobContext(name))
        board.run_finished(name, "success", 0.1)
    for i in range(3):
        board.run_started("optional", JobContext("optional"))
        board.run_finished("optional", "failed", 0.1, error="http_5xx")
        assert board.report().status == "degraded"
        board.run_started("critical", JobContext("critical"))
        board.run_finished("critical", "timeout" if i == 2 else "failed", 0.1, error="http_5xx")
        assert board.report().status == ("unhealthy" if i == 2 else "degraded")
    report = board.report()
    assert report.http_status == 503
    assert report.jobs["critical"]["last_error"] == "timeout"
    assert report.summary["unhealthy_jobs"] == 2
    board.run_started("critical", JobContext("critical"))
    board.run_finished("critical", "success", 0.1)
    assert board.report().jobs["critical"]["consecutive_failures"] == 0
    assert board.report().jobs["critical"]["last_error"] is None


def test_unregistered_statuses_are_dropped_after_24_hours_registered_ones_stay() -> None:
    clock = FakeClock()
    board = StatusBoard(wall=lambda: clock.wall, monotonic=lambda: clock.mono)
    board.register(job("kept", noop, interval=10))
    board.register(job("gone", noop, interval=10))
    board.unregister("gone")
    clock.advance(23 * 3600)
    assert set(board.report().jobs) == {"kept", "gone"}
    clock.advance(2 * 3600)
    assert set(board.report().jobs) == {"kept"}


def test_job_status_body_has_the_spec_keys() -> None:
    board = StatusBoard()
    board.register(job("j", noop))
    body = board.report().jobs["j"]
    assert set(body) == {
        "job_name",
        "status",
        "last_run_time",
        "last_success_time",
        "last_duration_ms",
        "next_run_time",
        "success_count",
        "failure_count",
        "consecutive_failures",
        "average_execution_ms",
        "max_execution_ms",
        "min_execution_ms",
        "last_error",
        "metadata",
        "created_at",
        "updated_at",
        "late",
        "skipped_count",
    }
    assert body["status"] == "pending"
    assert body["min_execution_ms"] is None
    assert body["created_at"].endswith("Z")


@pytest.mark.anyio
async def test_a_stuck_scheduler_fails_liveness(metrics: Metrics) -> None:
    observed: list[bool] = []
    lifecycle = Lifecycle()

    async def blocks_the_loop(ctx: JobContext) -> None:
        if observed:
            return
        time.sleep(0.5)  # a bug: blocking the event loop stops every scheduler loop
        observed.append(runtime.alive())
        observed.append(not lifecycle.dead_parts())

    runtime = JobRuntime(
        fast_settings(),
        metrics,
        None,
        lifecycle,
        None,
        [job("blocker", blocks_the_loop, interval=0.05), job("other", noop, interval=0.05)],
        late_grace=0.1,
    )
    async with running(runtime):
        await wait_for(lambda: len(observed) == 2)
        assert observed == [False, False]  # stuck: the liveness hook and /livez's view both say dead
        await wait_for(runtime.alive)  # the loops advance again
        assert lifecycle.dead_parts() == []
    assert runtime.alive()  # shut down (drained), not dead: nothing to be stuck
