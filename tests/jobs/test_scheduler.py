"""The scheduler: no overlap, timeouts cancel, failures are contained and counted, shutdown unwinds."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from icy_backend.metrics import Metrics
from jobs.context import JobContext
from jobs.runtime import set_pending
from tests.jobs.conftest import fast_settings, job, make_runtime, running, sample, wait_for

RUNS = "icy_backend_background_job_runs_total"


@pytest.mark.anyio
async def test_slow_job_never_overlaps_and_skipped_ticks_are_counted(metrics: Metrics) -> None:
    concurrent = 0
    max_concurrent = 0
    starts = 0

    async def slow(ctx: JobContext) -> None:
        nonlocal concurrent, max_concurrent, starts
        starts += 1
        concurrent += 1
        max_concurrent = max(max_concurrent, concurrent)
        try:
            for _ in range(7):
                await anyio.sleep(0.05)
                ctx.heartbeat()
        finally:
            concurrent -= 1

    runtime = make_runtime(metrics, [job("slow", slow, interval=0.1)])
    async with running(runtime):
        await wait_for(lambda: sample(metrics, RUNS, job_name="slow", status="success") >= 2, timeout=5)
    assert max_concurrent == 1
    assert sample(metrics, RUNS, job_name="slow", status="skipped") >= 2
    assert runtime.statuses()["slow"]["skipped_count"] == sample(metrics, RUNS, job_name="slow", status="skipped")
    # Each run takes ~0.35 s with ticks every 0.1 s: most ticks are skipped.
    assert starts <= sample(metrics, RUNS, job_name="slow", status="success") + 1


@pytest.mark.anyio
async def test_timeout_cancels_the_run_and_counts(metrics: Metrics) -> None:
    after_sleep = False
    cancelled = anyio.Event()

    async def hangs(ctx: JobContext) -> None:
        nonlocal after_sleep
        try:
            await anyio.sleep(30)
            after_sleep = True  # sentinel: only reached if the timeout did not cancel the body
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    runtime = make_runtime(metrics, [job("hangs", hangs, interval=5.0, timeout=0.15)])
    started = time.monotonic()
    async with running(runtime):
        with anyio.fail_after(3):
            await cancelled.wait()
        await wait_for(lambda: sample(metrics, "icy_backend_job_timeouts_total", job_name="hangs") == 1)
        status = runtime.statuses()["hangs"]
    assert time.monotonic() - started < 2
    assert not after_sleep
    assert status["status"] == "failed"
    assert status["last_error"] == "timeout"
    assert status["failure_count"] == 1
    assert status["consecutive_failures"] == 1
    assert 100 <= status["last_duration_ms"] < 1500  # milliseconds, not nanoseconds or seconds
    assert sample(metrics, RUNS, job_name="hangs", status="timeout") == 1
    assert sample(metrics, RUNS, job_name="hangs", status="failed") == 0
    assert sample(metrics, "icy_backend_background_job_duration_seconds_count", job_name="hangs", status="timeout") == 1
    assert sample(metrics, "icy_backend_background_jobs_active") == 0


@pytest.mark.anyio
async def test_exception_is_contained_redacted_and_logged_without_urls(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def boom(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("cannot reach https://user:pw@rpc.example/secret-token-123 for /Users/x")

    runtime = make_runtime(metrics, [job("boom", boom, interval=0.05)])
    with caplog.at_level(logging.DEBUG):
        async with running(runtime):
            await wait_for(lambda: sample(metrics, RUNS, job_name="boom", status="failed") >= 3)
            status = runtime.statuses()["boom"]
    assert calls >= 3  # the scheduler survived every failure and kept scheduling
    assert status["status"] == "failed"
    assert status["last_error"] == "internal_error"
    assert status["consecutive_failures"] >= 3
    assert "secret-token-123" not in str(status)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "boom" in r.getMessage()]
    assert warnings, "the full error is logged at WARNING"
    assert all("RuntimeError" in r.getMessage() for r in warnings)
    assert not any("secret-token-123" in r.getMessage() or "pw@" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_every_item_failed_is_a_failed_run_and_partial_failure_is_success(metrics: Metrics) -> None:
    async def all_fail(ctx: JobContext) -> None:
        for _ in range(3):
            ctx.item_failed("broadcast_rejected")

    async def partial(ctx: JobContext) -> None:
        ctx.item_succeeded()
        ctx.item_succeeded()
        ctx.item_failed("timeout")
        ctx.set_metadata("cursor_height", 812)

    runtime = make_runtime(metrics, [job("all_fail", all_fail, interval=5), job("partial", partial, interval=5)])
    async with running(runtime):
        await wait_for(
            lambda: (
                sample(metrics, RUNS, job_name="all_fail", status="failed") == 1
                and sample(metrics, RUNS, job_name="partial", status="success") == 1
            )
        )
        statuses = runtime.statuses()
    failed, ok = statuses["all_fail"], statuses["partial"]
    assert failed["status"] == "failed"
    assert failed["last_error"] == "broadcast_rejected"
    assert failed["metadata"]["items_failed"] == 3
    assert failed["metadata"]["items_succeeded"] == 0
    assert ok["status"] == "success"
    assert ok["last_error"] is None
    assert ok["metadata"] == {
        "cursor_height": 812,
        "items_succeeded": 2,
        "items_failed": 1,
        "failure_kinds": {"timeout": 1},
    }
    assert sample(metrics, RUNS, job_name="partial", status="failed") == 0


@pytest.mark.anyio
async def test_success_metrics_durations_in_ms_and_first_run_delay(metrics: Metrics) -> None:
    async def quick(ctx: JobContext) -> None:
        await anyio.sleep(0.03)
        ctx.item_succeeded()

    settings = fast_settings(JOB_FIRST_RUN_DELAY="0.3")
    runtime = make_runtime(metrics, [job("quick", quick, interval=0.1)], settings=settings)
    before = time.time()
    async with running(runtime):
        pending = runtime.statuses()["quick"]
        assert pending["status"] == "pending"
        assert pending["min_execution_ms"] is None
        assert pending["last_duration_ms"] is None
        assert pending["last_run_time"] is None
        assert pending["next_run_time"] is not None
        await anyio.sleep(0.15)
        assert sample(metrics, RUNS, job_name="quick", status="success") == 0  # first run waits for the delay
        await wait_for(lambda: sample(metrics, RUNS, job_name="quick", status="success") >= 3)
        status = runtime.statuses()["quick"]
    assert status["status"] == "success"
    assert status["success_count"] >= 3
    assert status["consecutive_failures"] == 0
    for key in ("last_duration_ms", "average_execution_ms", "min_execution_ms", "max_execution_ms"):
        assert 25 <= status[key] < 1000, key  # ~30 ms, in milliseconds
    assert status["min_execution_ms"] <= status["average_execution_ms"] <= status["max_execution_ms"]
    assert status["last_run_time"].endswith("Z")
    last_success = sample(metrics, "icy_backend_background_job_last_success_timestamp_seconds", job_name="quick")
    assert before <= last_success <= time.time()
    assert sample(metrics, "icy_backend_background_job_duration_seconds_count", job_name="quick", status="success") >= 3
    assert sample(metrics, "icy_backend_job_leader") == 0  # stopped: no longer running jobs


@pytest.mark.anyio
async def test_active_gauge_and_shutdown_cancels_running_jobs(metrics: Metrics) -> None:
    in_run = anyio.Event()
    unwound = False

    async def long(ctx: JobContext) -> None:
        nonlocal unwound
        in_run.set()
        try:
            await anyio.sleep(30)
        finally:
            unwound = True

    runtime = make_runtime(metrics, [job("long", long, interval=0.1, timeout=60)])
    started = time.monotonic()
    async with running(runtime):
        with anyio.fail_after(2):
            await in_run.wait()
        assert sample(metrics, "icy_backend_background_jobs_active") == 1
        assert sample(metrics, "icy_backend_job_leader") == 1
        assert runtime.role == "single"
        assert runtime.statuses()["long"]["status"] == "running"
    assert unwound
    assert time.monotonic() - started < 2
    assert sample(metrics, "icy_backend_background_jobs_active") == 0
    status = runtime.statuses()["long"]
    assert status["status"] == "pending"  # interrupted by shutdown: not a result of the job
    assert status["failure_count"] == 0
    assert status["next_run_time"] is None


@pytest.mark.anyio
async def test_error_while_unwinding_from_a_timeout_is_still_a_timeout(metrics: Metrics) -> None:
    async def messy(ctx: JobContext) -> None:
        try:
            await anyio.sleep(30)
        finally:
            raise ValueError("cleanup failed")

    runtime = make_runtime(metrics, [job("messy", messy, interval=5, timeout=0.1)])
    async with running(runtime):
        await wait_for(lambda: sample(metrics, "icy_backend_job_timeouts_total", job_name="messy") == 1)
    assert runtime.statuses()["messy"]["last_error"] == "timeout"
    assert sample(metrics, RUNS, job_name="messy", status="timeout") == 1


@pytest.mark.anyio
async def test_metadata_that_is_not_json_is_dropped_not_fatal(metrics: Metrics) -> None:
    async def odd(ctx: JobContext) -> None:
        ctx.set_metadata("height", 7)
        ctx.set_metadata("ratio", float("nan"))
        ctx.set_metadata("obj", object())

    runtime = make_runtime(metrics, [job("odd", odd, interval=5)])
    async with running(runtime):
        await wait_for(lambda: runtime.statuses()["odd"]["success_count"] == 1)
    assert runtime.statuses()["odd"]["metadata"] == {"height": 7}


def test_set_pending_sets_the_gauge(metrics: Metrics) -> None:
    set_pending(metrics, "btc_payout", 4)
    set_pending(metrics, "swap_request", 0)
    assert sample(metrics, "icy_backend_pending_transactions", transaction_type="btc_payout") == 4
    assert sample(metrics, "icy_backend_pending_transactions", transaction_type="swap_request") == 0
    with pytest.raises(ValueError, match="transaction_type"):
        set_pending(metrics, "btc", 1)
