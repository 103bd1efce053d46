"""A per-endpoint result cache with single-flight per check (SPEC §5).

Concurrent probes of one check share one in-flight run; within the TTL a probe reads the last result. The
first prober (the leader) runs the check itself inside a shielded cancel scope: the run is bounded by the
check's own deadline, and cancelling the leader (a client that hung up) cannot cancel the run the other
probers wait for.
The leader's cancellation takes effect as soon as the shared run is over. No task outlives its caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

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
    """Single-flight per check name, plus a TTL (``0`` = share only in-flight runs, keep nothing)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._flights: dict[str, _Flight] = {}

    def bind(self, run: RunFn) -> RunFn:
        """A run function that goes through this cache (for :meth:`checks.runner.Runner.run_all`)."""

        async def cached(check: Check, end: float) -> CheckResult:
            if not check.cached:
                return await run(check, end)
            return await self.get(check, end, run)

        return cached

    async def get(self, check: Check, end: float, run: RunFn) -> CheckResult:
        """The cached result of ``check`` if fresh, else the result of the in-flight run or of a new one."""
        entry = self._entries.get(check.name)
        if entry is not None and anyio.current_time() - entry.done_at < self.ttl:
            return entry.result
        flight = self._flights.get(check.name)
        if flight is not None:
            return await self._wait(check, flight, end)
        flight = self._flights[check.name] = _Flight()
        try:
            # Shielded: bounded by the check's deadline (``run`` cancels the body at ``end``), and shared.
            with anyio.CancelScope(shield=True):
                result = await run(check, end)
            flight.result = result
            if self.ttl > 0:
                self._entries[check.name] = _Entry(result, anyio.current_time())
        finally:
            del self._flights[check.name]
            flight.event.set()
        return result

    @staticmethod
    async def _wait(check: Check, flight: _Flight, end: float) -> CheckResult:
        start = anyio.current_time()
        with anyio.move_on_after(max(0.0, end - start)):
            await flight.event.wait()
        if flight.result is None:  # our deadline came first (or the leader failed): report a timeout
            return timeout_result(check, (anyio.current_time() - start) * 1000)
        return flight.result

    def clear(self) -> None:
        self._entries.clear()
