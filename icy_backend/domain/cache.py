"""A one-value TTL cache with single-flight refresh, used by the oracle (SPEC §9).

Concurrent callers that find no fresh value share one computation: the first one runs it, the others wait for
its result. If the computing caller is cancelled (its client went away), a waiting caller takes over.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


@dataclass
class _Flight(Generic[T]):
    done: anyio.Event
    value: T | None = None
    ok: bool = False
    error: Exception | None = None


@dataclass(frozen=True)
class Lookup(Generic[T]):
    """A value and whether it came from the cache (``hit``) or from a computation (``miss``)."""

    value: T
    hit: bool
    fetched_at: float


class SingleFlightCache(Generic[T]):
    """Holds the last computed value for ``ttl`` seconds (monotonic clock)."""

    def __init__(
        self, compute: Callable[[], Awaitable[T]], ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._compute = compute
        self.ttl = ttl
        self._clock = clock
        self._value: T | None = None
        self._fetched_at: float | None = None
        self._flight: _Flight[T] | None = None
        self.computations = 0

    @property
    def fetched_at(self) -> float | None:
        return self._fetched_at

    def age(self) -> float | None:
        """Seconds since the cached value was computed, or None when nothing is cached."""
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self.ttl

    async def get(self, *, fresh: bool = False) -> Lookup[T]:
        """The cached value when fresh (unless ``fresh``), else the result of a (shared) computation.

        With ``fresh=True`` the cache is bypassed but a computation already in flight is joined: it started
        no earlier than this call's data could have been fetched anyway, and it spares the upstreams.
        """
        while True:
            if not fresh and self._fresh():
                assert self._fetched_at is not None
                return Lookup(self._value, True, self._fetched_at)  # type: ignore[arg-type]
            flight = self._flight
            if flight is None:
                return await self._lead()
            await flight.done.wait()
            if flight.ok:
                assert self._fetched_at is not None
                return Lookup(flight.value, False, self._fetched_at)  # type: ignore[arg-type]
            if flight.error is not None:
                raise flight.error.with_traceback(None)
            # The leader was cancelled: loop and lead (or join) a new computation.

    async def _lead(self) -> Lookup[T]:
        flight: _Flight[T] = _Flight(anyio.Event())
        self._flight = flight
        try:
            self.computations += 1
            value = await self._compute()
            flight.value, flight.ok = value, True
            self._value, self._fetched_at = value, self._clock()
            return Lookup(value, False, self._fetched_at)
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            self._flight = None
            flight.done.set()

    def invalidate(self) -> None:
        self._fetched_at = None
