"""Process lifecycle flags read by the probes (started, draining, liveness hooks) and the shutdown budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

log = logging.getLogger(__name__)

SHUTDOWN_CLOSE_SECONDS = 5.0
"""Closing the outbound clients and the database pool at the end of the lifespan is abandoned after this long
(a partitioned database would otherwise hang the goodbye of every pooled connection)."""
EXIT_REAP_SECONDS = 2.0
"""After the server and its lifespan have stopped, leftover tasks get this long to end before the process exits."""
KUBERNETES_MARGIN_SECONDS = 5.0
"""The whole shutdown must end this long before ``terminationGracePeriodSeconds`` (SPEC §8)."""


class Lifecycle:
    """``/readyz`` is 503 until :meth:`mark_started` and again from :meth:`begin_drain` on.

    Liveness hooks let parts that own a loop (the job scheduler) make ``/livez`` fail when the loop is stuck or
    has died. A part that ends during shutdown (after :meth:`begin_drain`) is not dead.
    """

    def __init__(self) -> None:
        self.started = False
        self.draining = False
        self.started_at: float | None = None
        self._liveness: dict[str, Callable[[], bool]] = {}

    def mark_started(self) -> None:
        self.started = True
        self.started_at = time.time()

    def begin_drain(self) -> None:
        self.draining = True

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    def add_liveness(self, name: str, alive: Callable[[], bool]) -> None:
        """Register a cheap, non-blocking predicate; ``/livez`` fails while it returns False."""
        self._liveness[name] = alive

    def remove_liveness(self, name: str) -> None:
        self._liveness.pop(name, None)

    def dead_parts(self) -> list[str]:
        return [name for name, alive in self._liveness.items() if not alive()]


@contextlib.asynccontextmanager
async def closing_within(seconds: float = SHUTDOWN_CLOSE_SECONDS) -> AsyncIterator[contextlib.AsyncExitStack]:
    """An ``AsyncExitStack`` for the lifespan's resources whose closing is shielded and bounded by ``seconds``.

    It is part of the shutdown budget: after the task group has unwound (jobs, webhook pings, the leader lock),
    the resources get at most ``seconds``; whatever is still closing then is abandoned (the process is exiting).
    """
    stack = contextlib.AsyncExitStack()
    try:
        yield stack
    finally:
        with anyio.move_on_after(seconds, shield=True) as scope:
            await stack.aclose()
        if scope.cancelled_caught:
            log.warning("closing clients and the database pool took over %.0f s; abandoned", seconds)


async def reap_leftover_tasks(
    seconds: float = EXIT_REAP_SECONDS, tasks: list[asyncio.Task[Any]] | None = None
) -> list[str]:
    """Cancel every other task still alive after the server stopped; return the names of those still running
    ``seconds`` later (the caller exits anyway).

    Libraries can leave tasks behind that never finish: SQLAlchemy's aiosqlite adapter shields a graceful close
    of a connection invalidated by a cancellation, and that close waits for a worker thread that was already
    stopped. ``asyncio.run`` would wait for such a task forever at exit, and the pod would be SIGKILLed.
    The serving process runs on asyncio (hypercorn's asyncio worker), so this uses asyncio directly. ``tasks``
    (default: every other task of the loop) narrows it down, for tests.
    """
    current = asyncio.current_task()
    candidates = asyncio.all_tasks() if tasks is None else tasks
    leftovers = [task for task in candidates if task is not current and not task.done()]
    for task in leftovers:
        task.cancel()
    if not leftovers:
        return []
    _, pending = await asyncio.wait(leftovers, timeout=seconds)
    names = sorted(getattr(task.get_coro(), "__qualname__", task.get_name()) for task in pending)
    if names:
        log.warning("tasks still running %.0f s after shutdown, exiting without them: %s", seconds, ", ".join(names))
    return names
