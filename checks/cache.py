"""A per-endpoint result cache: single-flight per check, TTL, stale-while-revalidate (SPEC §5).

* Within ``ttl`` a probe reads the last result.
* Past it, the first probe starts **one** refresh (single-flight: every probe meanwhile shares that run). With a
  task group attached (:meth:`ResultCache.attach`, done by the health service inside the app's lifespan), the
  refresh runs there, bounded by the check's own deadline (the runner really cancels it then), and a probe
  whose last result is younger than ``max_stale`` answers **at once** from it; only a probe with no result, or an
  older one, waits for the refresh (up to its own deadline). So once an endpoint has answered, probes answer in
  milliseconds even while a dependency hangs, and the status changes one refresh later.
* Without a task group (the CLI, a bare service) the first prober runs the check itself inside a shielded
  cancel scope, so cancelling it (a client that hung up) cannot cancel the run the other probers wait for.
* :meth:`ResultCache.refresh_if_stale` starts a refresh without waiting for it (a Prometheus scrape does that).

Nothing outlives the lifespan: refreshes are tasks of the attached task group, cancelled when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from checks.model import Check, CheckResult
from checks.runner import RunFn, timeout_result


@dataclass
class _Flight:
    event: anyio.Event = field(default_factory=anyio.Event)
    result: CheckResult | None = None


@dataclass
class _Entry:
    result: CheckResult
    done_at: float  # anyio.current_time() when the run finished


class ResultCache:
    """Single-flight per check name, plus a TTL (``0`` = share only in-flight runs, keep nothing) and, with a task
    group attached, stale-while-revalidate up to ``max_stale`` seconds."""

    def __init__(self, ttl: float, max_stale: float = 0.0) -> None:
        if max_stale and max_stale < ttl:
            raise ValueError("max_stale must be 0 or at least the TTL")
        self.ttl = ttl
        self.max_stale = max_stale
        self._entries: dict[str, _Entry] = {}
        self._flights: dict[str, _Flight] = {}
        self._task_group: TaskGroup | None = None

    def attach(self, task_group: TaskGroup | None) -> None:
        """Run refreshes in ``task_group`` from now on (``None``: back to probe-led runs)."""
        self._task_group = task_group

    def bind(self, run: RunFn) -> RunFn:
        """A run function that goes through this cache (for :meth:`checks.runner.Runner.run_all`)."""

        async def cached(check: Check, end: float) -> CheckResult:
            if not check.cached:
                return await run(check, end)
            return await self.get(check, end, run)

        return cached

    def age(self, name: str) -> float | None:
        """Seconds since the last result of ``name`` was taken, ``None`` without one."""
        entry = self._entries.get(name)
        return None if entry is None else anyio.current_time() - entry.done_at

    async def get(self, check: Check, end: float, run: RunFn) -> CheckResult:
        """The cached result of ``check`` if fresh (or stale but within ``max_stale`` while a refresh runs), else
        the result of the in-flight run or of a new one, waited for until ``end`` at most."""
        entry = self._entries.get(check.name)
        age = None if entry is None else anyio.current_time() - entry.done_at
        if entry is not None and age is not None and age < self.ttl:
            return entry.result
        flight = self._flights.get(check.name)
        if self._task_group is None:
            if flight is not None:
                return await self._wait(check, flight, end)
            return await self._lead(check, end, run)
        if flight is None:
            flight = self._start(check, run, self._task_group)
        if entry is not None and age is not None and age < self.max_stale:
            return entry.result  # stale-while-revalidate: the refresh goes on in the task group
        return await self._wait(check, flight, end)

    def refresh_if_stale(self, check: Check, run: RunFn) -> bool:
        """Start a refresh of ``check`` if its result is missing or older than the TTL and none is running;
        never waits. Needs an attached task group (otherwise does nothing). Returns whether one was started."""
        if self._task_group is None or check.name in self._flights:
            return False
        age = self.age(check.name)
        if age is not None and age < self.ttl:
            return False
        self._start(check, run, self._task_group)
        return True

    def _start(self, check: Check, run: RunFn, task_group: TaskGroup) -> _Flight:
        flight = self._flights[check.name] = _Flight()
        task_group.start_soon(self._refresh, check, run, flight, name=f"health-refresh:{check.name}")
        return flight

    async def _refresh(self, check: Check, run: RunFn, flight: _Flight) -> None:
        try:
            # Bounded by the check's own deadline: the runner cancels the body then and reports ``timeout``.
            self._store(check, flight, await run(check, anyio.current_time() + check.timeout))
        finally:
            self._land(check, flight)

    async def _lead(self, check: Check, end: float, run: RunFn) -> CheckResult:
        flight = self._flights[check.name] = _Flight()
        try:
            # Shielded: bounded by the check's deadline (``run`` cancels the body at ``end``), and shared.
            with anyio.CancelScope(shield=True):
                result = await run(check, end)
            self._store(check, flight, result)
        finally:
            self._land(check, flight)
        return result

    def _store(self, check: Check, flight: _Flight, result: CheckResult) -> None:
        flight.result = result
        if self.ttl > 0:
            self._entries[check.name] = _Entry(result, anyio.current_time())

    def _land(self, check: Check, flight: _Flight) -> None:
        if self._flights.get(check.name) is flight:
            del self._flights[check.name]
        flight.event.set()

    @staticmethod
    async def _wait(check: Check, flight: _Flight, end: float) -> CheckResult:
        start = anyio.current_time()
        with anyio.move_on_after(max(0.0, end - start)):
            await flight.event.wait()
        if flight.result is None:  # our deadline came first (or the run was cancelled): report a timeout
            return timeout_result(check, (anyio.current_time() - start) * 1000)
        return flight.result

    def clear(self) -> None:
        self._entries.clear()
