"""Stale-while-revalidate and scrape-triggered refreshes (SPEC §5), with the refreshes in the service's task group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from checks.cache import ResultCache
from checks.database import database_check
from checks.model import HEALTHY, Check, Metadata, Outcome
from checks.runner import Runner
from checks.service import CacheTTL, Deadlines, HealthService, MaxStale, build_health
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from icy_backend.metrics.endpoint import metrics_route
from icy_backend.routes.health import routes as health_routes
from icy_backend.sim.faults import Fault
from tests.checks.conftest import PG_URL, Upstreams, make_settings, postgres_engine, upstreams
from tests.jobs.tcp_proxy import freezable_proxy

pytestmark = pytest.mark.anyio

EXTERNAL = "/api/v1/health/external"
# Generous bound for "answers at once" (the refresh it started takes the whole deadline).
AT_ONCE = 0.25


class Switch:
    """A check body that is healthy, or hangs until cancelled when ``hang`` is set; counts its runs."""

    def __init__(self) -> None:
        self.hang = False
        self.started = 0
        self.cancelled = 0

    async def __call__(self, metadata: Metadata) -> Outcome:
        self.started += 1
        if self.hang:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled += 1
                raise
        return HEALTHY


@asynccontextmanager
async def running(health: HealthService, metrics: Metrics | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The health routes and /metrics, with ``health.run`` started in the lifespan's task group (as the app)."""
    routes = [*health_routes, *([metrics_route(metrics, None)] if metrics is not None else [])]
    app = Starlette(routes=routes)
    async with anyio.create_task_group() as tg:
        await tg.start(health.run)
        state = {"health": health}

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope = {**scope, "state": dict(state)}
            await app(scope, receive, send)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://test") as client:
            yield client
        tg.cancel_scope.cancel()


def _readyz_service(body: Switch, metrics: Metrics | None = None, *, ttl: float = 0.1) -> HealthService:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    return HealthService(
        lifecycle=lifecycle,
        database=Check("database", body, timeout=0.3),
        external=[],
        metrics=metrics,
        deadlines=Deadlines(readyz=0.3),
        ttl=CacheTTL(readyz=ttl),
    )


async def _timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    start = anyio.current_time()
    response = await client.get(path)
    return response, anyio.current_time() - start


async def test_readyz_answers_from_the_stale_result_at_once_and_changes_one_refresh_later() -> None:
    body = Switch()
    health = _readyz_service(body)
    async with running(health) as client:
        first = await client.get("/readyz")
        assert first.status_code == 200
        body.hang = True
        await anyio.sleep(0.15)  # past the 0.1 s TTL, well within max_stale (5 s)
        stale, took = await _timed_get(client, "/readyz")
        assert stale.status_code == 200, "the last result answers while the refresh runs"
        assert took < AT_ONCE
        assert stale.json()["checks"]["database"]["checked_at"] == first.json()["checks"]["database"]["checked_at"]
        # More probes during the refresh share it: one run, not one per probe.
        for _ in range(5):
            assert (await client.get("/readyz")).status_code == 200
        assert body.started == 2
        await anyio.sleep(0.4)  # the refresh hit its 0.3 s deadline and was really cancelled
        assert body.cancelled == 1
        after, took = await _timed_get(client, "/readyz")
        assert after.status_code == 503
        assert after.json()["checks"]["database"]["error"] == "timeout"
        assert took < AT_ONCE


async def test_readyz_result_older_than_max_stale_waits_for_the_refresh() -> None:
    body = Switch()
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    health = HealthService(
        lifecycle=lifecycle,
        database=Check("database", body, timeout=0.2),
        external=[],
        deadlines=Deadlines(readyz=0.2),
        ttl=CacheTTL(readyz=0.05),
        max_stale=MaxStale(readyz=0.1),
    )
    async with running(health) as client:
        assert (await client.get("/readyz")).status_code == 200
        body.hang = True
        await anyio.sleep(0.15)  # older than max_stale: no stale answer any more
        response, took = await _timed_get(client, "/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["error"] == "timeout"
    assert 0.15 <= took < 1.0


async def _external_service(ups: Upstreams, *, ttl: float = 0.2, deadline: float = 0.3) -> HealthService:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    return build_health(
        make_settings(),
        ups.metrics,
        lifecycle,
        None,
        ups.clients,
        ups.breakers,
        deadlines=Deadlines(external=deadline),
        ttl=CacheTTL(external=ttl),
    )


async def test_external_answers_stale_in_milliseconds_while_every_upstream_hangs() -> None:
    async with upstreams() as ups:
        health = await _external_service(ups)
        async with running(health) as client:
            first = await client.get(EXTERNAL)
            assert first.status_code == 200
            assert first.json()["status"] == "healthy"
            for faults in ups.all_faults:
                faults.set(Fault(path="*", hang=True))
            await anyio.sleep(0.25)
            before = ups.requests()
            answers = []
            for _ in range(10):
                answers.append(await _timed_get(client, EXTERNAL))
            assert all(r.status_code == 200 for r, _ in answers)
            assert max(took for _, took in answers) < AT_ONCE
            # One refresh per upstream for all ten probes (single-flight).
            assert {k: v - before[k] for k, v in ups.requests().items()} == {k: 1 for k in before}
            await anyio.sleep(0.6)
            # The hanging requests were cancelled at the 0.3 s deadline, not left running.
            assert all(t.cancelled == 1 for t in ups.transports.values())
            after, took = await _timed_get(client, EXTERNAL)
            assert after.status_code == 503
            assert took < AT_ONCE
            assert {c["error"] for c in after.json()["checks"].values()} == {"timeout"}


async def test_scrape_starts_a_refresh_and_never_waits_for_it() -> None:
    metrics = Metrics(make_registry())
    async with upstreams(metrics) as ups:
        health = await _external_service(ups, ttl=0.2, deadline=0.5)
        async with running(health, metrics) as client:
            scrape, took = await _timed_get(client, "/metrics")
            assert scrape.status_code == 200
            assert took < AT_ONCE  # it started the first runs but did not wait for them
            await anyio.sleep(0.3)
            assert ups.requests()["esplora"] == 1
            status = {"check": "blockstream_api"}
            value = metrics.registry.get_sample_value
            assert value("icy_backend_health_check_status", status) == 1
            checked = value("icy_backend_health_check_last_checked_timestamp_seconds", status)
            assert checked is not None
            # No prober: the upstream fails, a later scrape refreshes the gauge.
            ups.esplora.faults.set(Fault(path="*", status=500))
            await anyio.sleep(0.25)
            await client.get("/metrics")
            await anyio.sleep(0.1)
            assert ups.requests()["esplora"] == 2
            assert value("icy_backend_health_check_status", status) == 0
            later = value("icy_backend_health_check_last_checked_timestamp_seconds", status)
            assert later is not None and later > checked
            # Within the TTL a scrape starts nothing.
            await client.get("/metrics")
            await anyio.sleep(0.05)
            assert ups.requests()["esplora"] == 2
            # The database and lifecycle checks of /readyz follow the scrapes too.
            assert value("icy_backend_health_check_status", {"check": "started"}) == 1


async def test_refreshes_end_with_the_service() -> None:
    """Nothing outlives the lifespan: a refresh in flight is cancelled when the service's task group ends."""
    body = Switch()
    health = _readyz_service(body)
    async with running(health) as client:
        assert (await client.get("/readyz")).status_code == 200
        body.hang = True
        await anyio.sleep(0.15)
        assert (await client.get("/readyz")).status_code == 200  # starts the refresh and answers stale
    assert body.cancelled == 1
    assert health.refresh_stale() == 0  # no task group any more: nothing starts


async def test_single_flight_cache_starts_one_refresh_for_many_stale_probes() -> None:
    body = Switch()
    check = Check("c", body, timeout=0.5)
    cache = ResultCache(ttl=0.05, max_stale=10)
    run = cache.bind(Runner().run)
    async with anyio.create_task_group() as tg:
        cache.attach(tg)
        await run(check, anyio.current_time() + 1)
        body.hang = True
        await anyio.sleep(0.1)
        for _ in range(20):
            assert (await run(check, anyio.current_time() + 1)).status == "healthy"
        for _ in range(5):
            cache.refresh_if_stale(check, Runner().run)
        await anyio.sleep(0.05)
        assert body.started == 2
        tg.cancel_scope.cancel()


@pytest.mark.postgres
async def test_readyz_with_a_frozen_real_database_answers_stale_then_unhealthy() -> None:
    """Real PostgreSQL behind a TCP proxy that freezes (a partition): probes keep answering in milliseconds from
    the last result, the refresh times out at its deadline, and the next probe reports it."""
    target = httpx.URL(PG_URL.replace("postgresql+asyncpg", "http"))
    async with freezable_proxy(target.host, target.port or 5432) as proxy:
        url = PG_URL.replace(f":{target.port or 5432}/", f":{proxy.port}/")
        async with postgres_engine(url) as engine:
            lifecycle = Lifecycle()
            lifecycle.mark_started()
            health = HealthService(
                lifecycle=lifecycle,
                database=database_check(engine, timeout=0.3),
                external=[],
                deadlines=Deadlines(readyz=0.3),
                ttl=CacheTTL(readyz=0.1),
            )
            async with running(health) as client:
                assert (await client.get("/readyz")).status_code == 200
                proxy.freeze()
                await anyio.sleep(0.15)
                stale, took = await _timed_get(client, "/readyz")
                assert stale.status_code == 200
                assert took < AT_ONCE
                await anyio.sleep(0.5)
                after, took = await _timed_get(client, "/readyz")
                assert after.status_code == 503
                assert after.json()["checks"]["database"]["error"] == "timeout"
                assert took < AT_ONCE
                proxy.thaw()
