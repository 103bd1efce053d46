"""The lifespan's resources close within their slot of the shutdown budget, even when cancelled or hanging."""

from __future__ import annotations

import time

import anyio
import pytest

from icy_backend.lifecycle import closing_within

pytestmark = pytest.mark.anyio


async def test_a_hanging_close_is_abandoned_after_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    async def hangs() -> None:
        await anyio.sleep(30)  # e.g. a pooled connection saying goodbye to a partitioned database

    started = time.monotonic()
    async with closing_within(0.2) as stack:
        stack.push_async_callback(hangs)
    assert time.monotonic() - started < 1.5
    assert "took over" in caplog.text


async def test_closing_runs_even_when_the_lifespan_is_cancelled() -> None:
    closed: list[str] = []

    async def close() -> None:
        await anyio.sleep(0.05)  # needs the event loop: a cancelled, unshielded close would not finish
        closed.append("engine")

    with anyio.CancelScope() as scope:
        async with closing_within(1) as stack:
            stack.push_async_callback(close)
            scope.cancel()
            await anyio.sleep(1)
    assert closed == ["engine"]


async def test_leftover_tasks_are_cancelled_and_a_stubborn_one_is_named_not_awaited() -> None:
    import asyncio

    from icy_backend.lifecycle import reap_leftover_tasks

    cancelled: list[str] = []

    async def polite() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("polite")
            raise

    async def stubborn() -> None:  # like the orphaned aiosqlite close: swallows the cancel, waits forever
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.get_running_loop().create_future()

    tasks = [asyncio.ensure_future(polite()), asyncio.ensure_future(stubborn())]
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await reap_leftover_tasks(0.2, tasks) == [stubborn.__qualname__]
    assert time.monotonic() - started < 1.5
    assert cancelled == ["polite"]
    tasks[1].cancel()  # let the test's own loop close (the server exits with os._exit instead)
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
