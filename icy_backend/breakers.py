"""One circuit breaker per upstream service (SPEC §7), on a single purgatory ``AsyncCircuitBreakerFactory``.

Purgatory gives the closed/open/half-open state machine and the event hooks. On top of it this module:

* translates purgatory's ``OpenedState`` (one exception instance reused for every rejection, so its traceback
  would grow forever) into our :class:`CircuitOpenError`, clearing the traceback first;
* bounds half-open concurrency to ``half_open_calls`` trial calls (purgatory lets every call through);
* leaves the state untouched when a call is cancelled (purgatory would count an excluded exception as a
  success and close a half-open breaker on it);
* does not count answers as failures: 4xx other than 429, JSON-RPC reverts and other application errors. Nor
  as successes: purgatory treats an excluded exception as a success and resets the failure streak, so five
  timeouts with a 404 in between would never open the breaker. An answer is not reported to purgatory at all;
* exposes a read-only :meth:`Breakers.state` that accounts for TTL expiry, for the health checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import anyio
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.messages.events import ContextChanged
from purgatory.domain.model import OpenedState

from icy_backend.clients.errors import CircuitOpenError, JsonRpcError, UpstreamHTTPStatus
from icy_backend.metrics.families import BREAKER_STATE_VALUE, Metrics
from icy_backend.settings import BREAKER_SERVICES, Settings

log = logging.getLogger("icy_backend.breakers")

BreakerState = Literal["closed", "half_open", "open"]
T = TypeVar("T")

_PURGATORY_STATE: dict[str, BreakerState] = {"closed": "closed", "opened": "open", "half-opened": "half_open"}


def _cancelled_exc_class() -> type[BaseException]:
    try:
        return anyio.get_cancelled_exc_class()
    except RuntimeError:  # built outside an event loop (the app factory): the service runs on asyncio
        return asyncio.CancelledError


class _Service:
    """Per-service bookkeeping next to purgatory's breaker."""

    def __init__(self, name: str, threshold: int, ttl: float, half_open_calls: int) -> None:
        self.name = name
        self.threshold = threshold
        self.ttl = ttl
        self.half_open_calls = half_open_calls
        self.trials = 0  # half-open trial calls in flight
        self.breaker: Any = None  # purgatory AsyncCircuitBreaker, created on first use


class Breakers:
    """The four service breakers. Use ``async with breakers.guard(service):`` around one logical call."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._metrics = metrics
        self._factory = AsyncCircuitBreakerFactory(
            exclude=[
                # Belt and braces: guard() already keeps cancellation away from purgatory.
                _cancelled_exc_class(),
                (UpstreamHTTPStatus, lambda exc: not exc.is_failure),
                (JsonRpcError, lambda exc: not exc.is_failure),
            ]
        )
        self._factory.add_listener(self._hook)
        self._services: dict[str, _Service] = {}
        for name in BREAKER_SERVICES:
            cfg = settings.breaker(name)
            self._services[name] = _Service(name, cfg.threshold, cfg.ttl_seconds, cfg.half_open_calls)
            # The gauge reads the live state, so an open breaker whose TTL passed shows half-open (1).
            metrics.breaker_state.labels(name).set_function(self._gauge_reader(name))

    def _gauge_reader(self, name: str) -> Callable[[], float]:
        return lambda: float(BREAKER_STATE_VALUE[self.state(name)])

    # ---- read-only views -------------------------------------------------------------------------------

    def state(self, service: str) -> BreakerState:
        """The state a call made now would see: an open breaker whose TTL has passed reads ``half_open``."""
        svc = self._services[service]
        if svc.breaker is None:
            return "closed"
        ctx = svc.breaker.context
        state = _PURGATORY_STATE[ctx.state]
        if state == "open" and ctx.opened_at is not None and time.time() > ctx.opened_at + svc.ttl:
            return "half_open"
        return state

    def retry_after(self, service: str) -> float | None:
        """Seconds until an open breaker admits a trial call; 0 when half-open; ``None`` when closed."""
        svc = self._services[service]
        state = self.state(service)
        if state == "closed":
            return None
        if state == "half_open":
            return 0.0
        opened_at = svc.breaker.context.opened_at or time.time()
        return max(0.0, opened_at + svc.ttl - time.time())

    # ---- guarding calls --------------------------------------------------------------------------------

    @asynccontextmanager
    async def guard(self, service: str) -> AsyncIterator[None]:
        """Run the body under ``service``'s breaker; raise :class:`CircuitOpenError` when it rejects the call.

        An exception leaving the body is a failure unless it is an answer (see the module doc) or a
        cancellation; cancellation leaves the breaker as it was.
        """
        svc = self._services[service]
        if svc.breaker is None:
            svc.breaker = await self._factory.get_breaker(service, svc.threshold, svc.ttl)
        breaker = svc.breaker
        trial = self.state(service) == "half_open"
        if trial:
            if svc.trials >= svc.half_open_calls:
                raise CircuitOpenError(service, self.retry_after(service))
            svc.trials += 1
        try:
            try:
                await breaker.__aenter__()
            except OpenedState as exc:
                # purgatory raises the same OpenedState instance every time: drop its growing traceback.
                exc.__traceback__ = None
                raise CircuitOpenError(service, self.retry_after(service)) from None
            # Publish an open -> half-open transition now rather than at the end of the trial call.
            await self._flush(breaker)
            try:
                yield
            except anyio.get_cancelled_exc_class():
                raise  # neither a success nor a failure: do not tell purgatory
            except (UpstreamHTTPStatus, JsonRpcError) as exc:
                if exc.is_failure:
                    await breaker.__aexit__(type(exc), exc, exc.__traceback__)
                raise  # an answer (4xx but 429, a revert): neither a success nor a failure
            except BaseException as exc:
                await breaker.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            else:
                await breaker.__aexit__(None, None, None)
        finally:
            if trial:
                svc.trials -= 1

    async def call(self, service: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` under the breaker (see :meth:`guard`)."""
        async with self.guard(service):
            return await fn()

    @staticmethod
    async def _flush(breaker: Any) -> None:
        ctx = breaker.context
        while ctx.messages:
            await breaker.messagebus.handle(ctx.messages.pop(0), breaker.uow)

    # ---- hooks -----------------------------------------------------------------------------------------

    def _hook(self, name: str, event_name: str, event: Any) -> None:
        if event_name != "state_changed" or not isinstance(event, ContextChanged):
            return
        to_state = _PURGATORY_STATE.get(event.state, "closed")
        self._metrics.breaker_transitions.labels(name, to_state).inc()
        level = logging.WARNING if to_state == "open" else logging.INFO
        log.log(level, "circuit breaker %s -> %s", name, to_state)
