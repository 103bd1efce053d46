"""The shared call pipeline: failover, retries, deadline, 429, breaker, cancellation, metrics, probes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import CircuitOpenError, UpstreamConnectionError, UpstreamHTTPStatus, UpstreamTimeout
from icy_backend.clients.esplora import EsploraClient
from icy_backend.metrics import Metrics
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.faults import Fault
from tests.icy_backend.clients.conftest import (
    HangingServer,
    calls,
    duration_count,
    make_breakers,
    sample,
    timeouts,
)

pytestmark = pytest.mark.anyio

API = "blockstream_api"
SIM = "http://sim"
FAST = httpx.Timeout(connect=0.5, read=0.3, write=0.3, pool=0.5)


@pytest.fixture
def sim() -> EsploraSim:
    return EsploraSim()


@pytest.fixture
async def http(sim: EsploraSim) -> AsyncIterator[httpx.AsyncClient]:
    """Real network for loopback endpoints, the in-process simulator for ``http://sim``."""
    async with httpx.AsyncClient(timeout=FAST, mounts={SIM: httpx.ASGITransport(app=sim.app)}) as client:
        yield client


def client(
    http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics, endpoints: list[str], deadline: float = 2.0
) -> EsploraClient:
    return EsploraClient(http, endpoints, breakers, metrics, deadline=deadline)


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


# ---- failover ------------------------------------------------------------------------------------------


async def test_failover_from_refused_endpoint(
    sim: EsploraSim, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics, closed_port: int
) -> None:
    esplora = client(http, breakers, metrics, [f"http://127.0.0.1:{closed_port}", SIM])
    assert await esplora.tip_height() == sim.height
    assert esplora.upstream.endpoints.current == SIM  # sticky from now on
    assert await esplora.tip_height() == sim.height
    assert calls(metrics, API, "success") == 2
    assert calls(metrics, API, "error") == 0
    assert breakers.state(API) == "closed"


async def test_refused_alone_is_a_typed_connection_error(
    http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics, closed_port: int
) -> None:
    esplora = client(http, breakers, metrics, [f"http://127.0.0.1:{closed_port}"])
    with pytest.raises(UpstreamConnectionError) as info:
        await esplora.tip_height()
    assert info.value.refused
    assert info.value.error_class == "connection_refused"
    assert calls(metrics, API, "error") == 1


async def test_failover_from_hanging_endpoint(
    sim: EsploraSim,
    http: httpx.AsyncClient,
    breakers: Breakers,
    metrics: Metrics,
    hanging_server: HangingServer,
) -> None:
    esplora = client(http, breakers, metrics, [f"http://127.0.0.1:{hanging_server.port}", SIM])
    started = time.monotonic()
    assert await esplora.tip_height() == sim.height
    assert time.monotonic() - started < 1.5
    assert hanging_server.connections == 1
    assert timeouts(metrics, API, "read") == 1
    assert calls(metrics, API, "success") == 1
    # The abandoned connection was closed, not left running.
    with anyio.fail_after(2):
        while hanging_server.disconnects < 1:
            await anyio.sleep(0.01)


async def test_failover_from_503(sim: EsploraSim, breakers: Breakers, metrics: Metrics) -> None:
    broken = EsploraSim()
    broken.faults.set(Fault(path="*", status=503))
    mounts = {"http://broken": httpx.ASGITransport(app=broken.app), SIM: httpx.ASGITransport(app=sim.app)}
    async with httpx.AsyncClient(mounts=mounts) as http:
        esplora = client(http, breakers, metrics, ["http://broken", SIM])
        assert await esplora.tip_height() == sim.height
        # The failed endpoint is set aside: the next call goes straight to the healthy one.
        broken.faults.clear()
        broken.mine()
        assert await esplora.tip_height() == sim.height
    assert calls(metrics, API, "success") == 2


# ---- retries, deadline, 429 ----------------------------------------------------------------------------


async def test_retries_recover_from_a_transient_error(sim: EsploraSim, breakers: Breakers, metrics: Metrics) -> None:
    failures = 2

    async def flaky(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal failures
        if scope["type"] == "http" and failures:
            failures -= 1
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await sim.app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=flaky)) as http:
        esplora = client(http, breakers, metrics, [SIM])
        assert await esplora.tip_height() == sim.height
    assert calls(metrics, API, "success") == 1


async def test_retries_stop_at_the_deadline(
    http: httpx.AsyncClient, metrics: Metrics, hanging_server: HangingServer
) -> None:
    breakers = make_breakers(metrics, threshold=10)
    esplora = client(http, breakers, metrics, [f"http://127.0.0.1:{hanging_server.port}"], deadline=0.5)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        await esplora.tip_height()
    elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 1.0
    assert info.value.kind == "deadline"
    assert info.value.error_class == "timeout"
    assert timeouts(metrics, API, "deadline") == 1
    assert timeouts(metrics, API, "read") == 1  # the first attempt timed out, the retry hit the deadline
    assert calls(metrics, API, "timeout") == 1
    assert duration_count(metrics, API, "tip_height", "timeout") == 1


async def test_429_retry_after_within_deadline(sim: EsploraSim, breakers: Breakers, metrics: Metrics) -> None:
    sent = 0

    async def limited(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal sent
        sent += 1
        if sent == 1:
            sim.faults.set(Fault(path="*", status=429, retry_after=1))
        else:
            sim.faults.clear()
        await sim.app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited)) as http:
        esplora = client(http, breakers, metrics, [SIM], deadline=3.0)
        started = time.monotonic()
        assert await esplora.tip_height() == sim.height
    assert time.monotonic() - started >= 0.95  # Retry-After honoured
    assert sent == 2


async def test_429_retry_after_beyond_deadline_gives_up(sim: EsploraSim, breakers: Breakers, metrics: Metrics) -> None:
    sim.faults.set(Fault(path="*", status=429, retry_after=30))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        esplora = client(http, breakers, metrics, [SIM], deadline=2.0)
        started = time.monotonic()
        with pytest.raises(UpstreamHTTPStatus) as info:
            await esplora.tip_height()
    assert time.monotonic() - started < 0.5  # no pointless wait
    assert info.value.status_code == 429
    assert info.value.retry_after == 30
    assert calls(metrics, API, "error") == 1


async def test_404_is_an_answer_not_retried(sim: EsploraSim, breakers: Breakers, metrics: Metrics) -> None:
    sim.faults.set(Fault(path="*", status=404))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        esplora = client(http, breakers, metrics, [SIM])
        for _ in range(5):
            with pytest.raises(UpstreamHTTPStatus):
                await esplora.tip_height()
    assert breakers.state(API) == "closed"


# ---- breaker through the client ------------------------------------------------------------------------


async def test_breaker_cycle_through_the_client(sim: EsploraSim, metrics: Metrics) -> None:
    breakers = make_breakers(metrics, threshold=3, ttl=0.2)
    sim.faults.set(Fault(path="*", status=500))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        esplora = client(http, breakers, metrics, [SIM])
        for _ in range(3):
            with pytest.raises(UpstreamHTTPStatus):
                await esplora.tip_height()
        assert breakers.state(API) == "open"
        assert sample(metrics, "icy_backend_circuit_breaker_state", api_name=API) == 2
        with pytest.raises(CircuitOpenError):
            await esplora.tip_height()
        assert calls(metrics, API, "error") == 3
        assert calls(metrics, API, "rejected") == 1
        assert duration_count(metrics, API, "tip_height", "rejected") == 1

        await anyio.sleep(0.25)
        sim.faults.set(Fault(path="*", latency_ms=200))
        results: list[str] = []

        async def one() -> None:
            try:
                await esplora.tip_height()
                results.append("ok")
            except CircuitOpenError:
                results.append("rejected")

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
        assert sorted(results) == ["ok", "rejected", "rejected", "rejected"]
        assert breakers.state(API) == "closed"
        assert calls(metrics, API, "rejected") == 4
        assert calls(metrics, API, "success") == 1
    for to_state in ("open", "half_open", "closed"):
        assert sample(metrics, "icy_backend_circuit_breaker_transitions_total", api_name=API, to_state=to_state) == 1


async def test_cancellation_does_not_open_the_breaker(sim: EsploraSim, metrics: Metrics) -> None:
    breakers = make_breakers(metrics, threshold=1)
    sim.faults.set(Fault(path="*", hang=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        esplora = client(http, breakers, metrics, [SIM], deadline=5.0)
        for _ in range(3):
            with anyio.move_on_after(0.05):
                await esplora.tip_height()
    assert breakers.state(API) == "closed"
    for status in ("success", "error", "timeout", "rejected"):
        assert calls(metrics, API, status) == 0  # a cancelled call has no outcome


async def test_timeout_is_a_failure_and_leaves_no_task(
    http: httpx.AsyncClient, metrics: Metrics, hanging_server: HangingServer
) -> None:
    breakers = make_breakers(metrics, threshold=1)
    before = other_tasks()
    esplora = client(http, breakers, metrics, [f"http://127.0.0.1:{hanging_server.port}"], deadline=0.3)
    with pytest.raises(UpstreamTimeout):
        await esplora.tip_height()
    assert breakers.state(API) == "open"
    assert calls(metrics, API, "timeout") == 1
    # The hanging server sees the client go away, and nothing of ours is left running.
    with anyio.fail_after(2):
        while hanging_server.disconnects < hanging_server.connections:
            await anyio.sleep(0.01)
    assert other_tasks() - before == set()


async def test_cancelling_the_caller_cancels_the_request(
    breakers: Breakers, metrics: Metrics, hanging_server: HangingServer
) -> None:
    # No read timeout and a long deadline: only the caller's cancellation can stop this request.
    async with httpx.AsyncClient(timeout=None) as slow_http:
        esplora = client(slow_http, breakers, metrics, [f"http://127.0.0.1:{hanging_server.port}"], deadline=30)
        with anyio.move_on_after(0.2):
            await esplora.tip_height()
        with anyio.fail_after(2):
            while hanging_server.disconnects < 1:
                await anyio.sleep(0.01)
    assert hanging_server.open_handlers == 0


# ---- probes --------------------------------------------------------------------------------------------


async def test_probes_do_not_touch_breakers_or_endpoints(
    http: httpx.AsyncClient, metrics: Metrics, closed_port: int, sim: EsploraSim
) -> None:
    breakers = make_breakers(metrics, threshold=1)
    esplora = client(http, breakers, metrics, [f"http://127.0.0.1:{closed_port}", SIM])
    for _ in range(3):
        with pytest.raises(UpstreamConnectionError):
            await esplora.probe()  # no failover for probes
    assert breakers.state(API) == "closed"
    assert esplora.upstream.endpoints.order()[0] == 0  # not set aside by a probe
    assert calls(metrics, API, "error") == 0
    assert timeouts(metrics, API, "connect") == 0
