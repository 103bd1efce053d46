"""The health service the routes and the CLI use: which checks each endpoint runs, its deadline and cache."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc
from anyio.abc import TaskGroup
from sqlalchemy.ext.asyncio import AsyncEngine

from checks.cache import ResultCache
from checks.database import database_check
from checks.external import BreakerStateFn, Probe, chain_validator, external_check, validate_tip_height
from checks.model import HEALTHY, Check, CheckResult, Metadata, Outcome, aggregate
from checks.render import Report
from checks.runner import Runner, now_utc
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings

# Response-time SLAs of SPEC §5 in seconds; each endpoint's deadline stays below its SLA.
SLAS = {"readyz": 0.5, "database": 0.5, "external": 2.0}


@dataclass(frozen=True)
class Deadlines:
    """Seconds each endpoint's checks get (below the SLAs: readyz 500 ms, db 500 ms, external 2000 ms)."""

    readyz: float = 0.4
    database: float = 0.4
    external: float = 1.5

    def __post_init__(self) -> None:
        for name, sla in SLAS.items():
            if not 0 < getattr(self, name) < sla:
                raise ValueError(f"the {name} deadline must be positive and below its {sla * 1000:.0f} ms SLA")


@dataclass(frozen=True)
class CacheTTL:
    """Result-cache TTL per endpoint in seconds; 0 shares only in-flight runs."""

    readyz: float = 1.0
    database: float = 0.0
    external: float = 10.0


@dataclass(frozen=True)
class MaxStale:
    """How old a cached result may be and still answer a probe at once while it is refreshed (SPEC §5)."""

    readyz: float = 5.0
    external: float = 60.0


class ClientsView(Protocol):
    """The part of ``icy_backend.clients.factory.Clients`` the checks use (``None`` = not configured)."""

    @property
    def esplora(self) -> Probe | None: ...
    @property
    def evm(self) -> Probe | None: ...
    @property
    def prices(self) -> Probe | None: ...
    @property
    def mochi(self) -> Probe | None: ...


class BreakersView(Protocol):
    def state(self, service: str) -> str: ...


LIFECYCLE_CHECKS = ("started", "draining")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def lifecycle_checks(lifecycle: Lifecycle) -> list[Check]:
    """``started`` (startup, migrations included, is complete) and ``draining`` (shutdown has not begun)."""

    async def started(_: Metadata) -> Outcome:
        return HEALTHY if lifecycle.started else Outcome("unhealthy", "not_started")

    async def draining(_: Metadata) -> Outcome:
        return Outcome("unhealthy", "draining") if lifecycle.draining else HEALTHY

    return [
        Check("started", started, critical=True, cached=False),
        Check("draining", draining, critical=True, cached=False),
    ]


class HealthService:
    """Runs the checks of ``/readyz``, ``/api/v1/health/db`` and ``/api/v1/health/external``."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        database: Check | None,
        external: Sequence[Check],
        metrics: Metrics | None = None,
        deadlines: Deadlines = Deadlines(),
        ttl: CacheTTL = CacheTTL(),
        max_stale: MaxStale = MaxStale(),
    ) -> None:
        self.deadlines = deadlines
        self.runner = Runner(metrics)
        self._metrics = metrics
        self._lifecycle_checks = lifecycle_checks(lifecycle)
        self._database = database
        self._external = list(external)
        self._readyz_cache = ResultCache(ttl.readyz, max_stale.readyz)
        self._db_cache = ResultCache(ttl.database)
        self._external_cache = ResultCache(ttl.external, max_stale.external)
        self._caches = (self._readyz_cache, self._db_cache, self._external_cache)
        self._task_group: TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve refreshes until cancelled: start it in the app's lifespan task group (``await tg.start(...)``).

        While it runs, stale results are refreshed in its task group (stale-while-revalidate) and every scrape
        of ``/metrics`` starts the refresh of stale results (:meth:`refresh_stale`). When it is cancelled the
        refreshes in flight are cancelled with it and probes go back to running checks themselves.
        """
        async with anyio.create_task_group() as tg:
            self._attach(tg)
            if self._metrics is not None:
                self._metrics.scrape_hooks.append(self.refresh_stale)
            try:
                task_status.started()
                await anyio.sleep_forever()
            finally:
                if self._metrics is not None:
                    self._metrics.scrape_hooks.remove(self.refresh_stale)
                self._attach(None)

    def _attach(self, tg: TaskGroup | None) -> None:
        self._task_group = tg
        for cache in self._caches:
            cache.attach(tg)

    def refresh_stale(self) -> int:
        """Start (never wait for) the refresh of every cached check whose result is missing or older than its
        endpoint's TTL: ``/readyz``'s database check and the external probes. Cheap in-memory checks (started,
        draining) are run too, so every ``check`` gauge follows. Returns how many runs were started."""
        tg = self._task_group
        if tg is None:
            return 0
        started = 0
        for cache, checks in ((self._readyz_cache, self.readiness_checks), (self._external_cache, self._external)):
            for check in checks:
                if check.cached:
                    started += cache.refresh_if_stale(check, self.runner.run)
                else:
                    tg.start_soon(self.runner.run, check, name=f"health-refresh:{check.name}")
                    started += 1
        return started

    @property
    def readiness_checks(self) -> list[Check]:
        return [*self._lifecycle_checks, *([self._database] if self._database else [])]

    @property
    def external_checks(self) -> list[Check]:
        return list(self._external)

    async def readiness(self, exclude: Iterable[str] = ()) -> Report:
        """``/readyz``: started, not draining, database. ``exclude`` skips checks, but not lifecycle ones."""
        checks = self.readiness_checks
        known = {c.name for c in checks}
        excluded: list[str] = []
        warnings: list[str] = []
        for raw in dict.fromkeys(exclude):
            name = _SAFE_NAME.sub("", raw)[:64]
            if raw not in known:
                warnings.append(f'some health checks cannot be excluded: no matches for "{name}"')
            elif raw in LIFECYCLE_CHECKS:
                warnings.append(f'health check "{name}" cannot be excluded')
            else:
                excluded.append(raw)
        selected = [c for c in checks if c.name not in excluded]
        return await self._report(selected, self.deadlines.readyz, self._readyz_cache, warnings, excluded)

    async def database(self) -> Report:
        """``/api/v1/health/db``: the ``database`` check (unhealthy ``not_configured`` without an engine)."""
        checks = [self._database or _not_configured("database", self.deadlines.database)]
        return await self._report(checks, self.deadlines.database, self._db_cache)

    async def external(self) -> Report:
        """``/api/v1/health/external``: every upstream probe, concurrently, cached 10 s."""
        return await self._report(self._external, self.deadlines.external, self._external_cache)

    async def everything(self) -> Report:
        """Every check once, uncached (``icy-backend check``)."""
        checks = [c for c in (self._database,) if c is not None] + self._external
        deadline = max(self.deadlines.database, self.deadlines.external)
        return await self._report(checks, deadline, None)

    async def _report(
        self,
        checks: Sequence[Check],
        deadline: float,
        cache: ResultCache | None,
        warnings: list[str] | None = None,
        excluded: list[str] | None = None,
    ) -> Report:
        timestamp = now_utc()
        start = anyio.current_time()
        run = cache.bind(self.runner.run) if cache is not None else self.runner.run
        results: list[CheckResult] = await self.runner.run_all(checks, deadline, run)
        return Report(
            status=aggregate(results),
            timestamp=timestamp,
            duration_ms=round((anyio.current_time() - start) * 1000, 3),
            results=results,
            warnings=warnings or [],
            excluded=excluded or [],
        )


def _not_configured(name: str, timeout: float) -> Check:
    async def body(_: Metadata) -> Outcome:
        return Outcome("unhealthy", "not_configured")

    return Check(name, body, critical=True, timeout=timeout)


def _breaker_state(breakers: BreakersView | None, service: str) -> BreakerStateFn:
    if breakers is None:
        return lambda: "closed"
    return lambda: breakers.state(service)


def external_checks(
    settings: Settings,
    clients: ClientsView | None,
    breakers: BreakersView | None,
    *,
    timeout: float,
) -> list[Check]:
    """``blockstream_api``, ``base_rpc`` (critical, always); ``coingecko``, ``mochi_pay`` if configured."""
    checks = [
        external_check(
            "blockstream_api",
            clients.esplora if clients else None,
            breaker_state=_breaker_state(breakers, "blockstream_api"),
            critical=True,
            timeout=timeout,
            validate=validate_tip_height,
        ),
        external_check(
            "base_rpc",
            clients.evm if clients else None,
            breaker_state=_breaker_state(breakers, "base_rpc"),
            critical=True,
            timeout=timeout,
            validate=chain_validator(settings.chain_id),
        ),
    ]
    if clients is not None and clients.prices is not None:
        checks.append(
            external_check(
                "coingecko",
                clients.prices,
                breaker_state=_breaker_state(breakers, "coingecko"),
                critical=False,
                timeout=timeout,
            )
        )
    if clients is not None and clients.mochi is not None:
        checks.append(
            external_check(
                "mochi_pay",
                clients.mochi,
                breaker_state=_breaker_state(breakers, "mochi_pay"),
                critical=False,
                timeout=timeout,
            )
        )
    return checks


def build_health(
    settings: Settings,
    metrics: Metrics | None,
    lifecycle: Lifecycle,
    engine: AsyncEngine | None,
    clients: ClientsView | None = None,
    breakers: BreakersView | None = None,
    *,
    deadlines: Deadlines = Deadlines(),
    ttl: CacheTTL = CacheTTL(),
    max_stale: MaxStale = MaxStale(),
) -> HealthService:
    """The health service of the app (called once in the lifespan; put into the state as ``health``)."""
    return HealthService(
        lifecycle=lifecycle,
        database=database_check(engine, timeout=deadlines.database) if engine is not None else None,
        external=external_checks(settings, clients, breakers, timeout=deadlines.external),
        metrics=metrics,
        deadlines=deadlines,
        ttl=ttl,
        max_stale=max_stale,
    )
