"""Single-flight result cache."""

from __future__ import annotations

import anyio
import pytest

from checks.cache import ResultCache
from checks.model import HEALTHY, Check, Metadata, Outcome
from checks.runner import Runner


class Counting:
    """A check body that counts its runs and takes ``seconds``."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds
        self.started = 0
        self.finished = 0

    async def __call__(self, metadata: Metadata) -> Outcome:
        self.started += 1
        await anyio.sleep(self.seconds)
        self.finished += 1
        metadata["run"] = self.started
        return HEALTHY


@pytest.mark.anyio
async def test_hundred_concurrent_probes_share_one_run() -> None:
    body = Counting(0.1)
    check = Check("c", body, timeout=1.0)
    cache = ResultCache(ttl=10.0)
    run = cache.bind(Runner().run)
    results = []

    async def probe() -> None:
        results.append(await run(check, anyio.current_time() + 1.0))

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(probe)
    assert body.started == 1
    assert len(results) == 100
    assert all(r is results[0] for r in results)


@pytest.mark.anyio
async def test_ttl_serves_the_last_result_then_expires() -> None:
    body = Counting(0.0)
    check = Check("c", body)
    cache = ResultCache(ttl=0.2)
    run = cache.bind(Runner().run)
    first = await run(check, anyio.current_time() + 1)
    await anyio.sleep(0.05)
    second = await run(check, anyio.current_time() + 1)
    assert second is first
    assert body.started == 1
    await anyio.sleep(0.2)
    third = await run(check, anyio.current_time() + 1)
    assert body.started == 2
    assert third.checked_at > first.checked_at


@pytest.mark.anyio
async def test_zero_ttl_keeps_nothing() -> None:
    body = Counting(0.0)
    check = Check("c", body)
    run = ResultCache(ttl=0).bind(Runner().run)
    await run(check, anyio.current_time() + 1)
    await run(check, anyio.current_time() + 1)
    assert body.started == 2


@pytest.mark.anyio
async def test_uncached_checks_bypass_the_cache() -> None:
    body = Counting(0.0)
    check = Check("c", body, cached=False)
    run = ResultCache(ttl=10).bind(Runner().run)
    await run(check, anyio.current_time() + 1)
    await run(check, anyio.current_time() + 1)
    assert body.started == 2


@pytest.mark.anyio
async def test_cancelling_one_waiter_does_not_cancel_the_shared_run() -> None:
    body = Counting(0.2)
    check = Check("c", body, timeout=1.0)
    run = ResultCache(ttl=10.0).bind(Runner().run)
    others = []
    leader_cancelled_at = None

    async def leader() -> None:
        nonlocal leader_cancelled_at
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + 0.05
            await run(check, anyio.current_time() + 1.0)
        leader_cancelled_at = anyio.current_time()

    async def waiter() -> None:
        others.append(await run(check, anyio.current_time() + 1.0))

    async def cancelled_waiter() -> None:
        with anyio.move_on_after(0.05):
            await run(check, anyio.current_time() + 1.0)

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.sleep(0.01)
        tg.start_soon(cancelled_waiter)
        for _ in range(5):
            tg.start_soon(waiter)
    assert body.started == 1
    assert body.finished == 1
    assert [r.status for r in others] == ["healthy"] * 5
    # The cancelled leader returned once the shared run was over, not later.
    assert leader_cancelled_at is not None
    assert leader_cancelled_at - start < 0.35


@pytest.mark.anyio
async def test_shared_run_is_still_bounded_by_its_deadline() -> None:
    body = Counting(5.0)
    check = Check("c", body, timeout=0.1)
    run = ResultCache(ttl=10.0).bind(Runner().run)
    results = []

    async def probe() -> None:
        results.append(await run(check, anyio.current_time() + 1.0))

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(probe)
    assert anyio.current_time() - start < 0.4
    assert body.started == 1
    assert body.finished == 0
    assert {r.error for r in results} == {"timeout"}


@pytest.mark.anyio
async def test_late_waiter_with_short_deadline_times_out_alone() -> None:
    body = Counting(0.3)
    check = Check("c", body, timeout=1.0)
    run = ResultCache(ttl=10.0).bind(Runner().run)
    results: dict[str, object] = {}

    async def long() -> None:
        results["long"] = (await run(check, anyio.current_time() + 1.0)).status

    async def short() -> None:
        results["short"] = (await run(check, anyio.current_time() + 0.05)).error

    async with anyio.create_task_group() as tg:
        tg.start_soon(long)
        await anyio.sleep(0.01)
        tg.start_soon(short)
    assert results == {"long": "healthy", "short": "timeout"}
    assert body.started == 1
