"""Breakers: closed -> open -> half-open (one trial at a time) -> closed; answers and cancellation."""

from __future__ import annotations

import logging

import anyio
import pytest

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import CircuitOpenError, JsonRpcError, UpstreamHTTPStatus, UpstreamTimeout
from icy_backend.metrics import Metrics, make_registry
from icy_backend.settings import Settings

SERVICE = "blockstream_api"


def make(threshold: int = 3, ttl: float = 0.2, half_open: int = 1) -> tuple[Breakers, Metrics]:
    settings = Settings(
        CB_BLOCKSTREAM_API_THRESHOLD=threshold,
        CB_BLOCKSTREAM_API_TTL_SECONDS=ttl,
        CB_BLOCKSTREAM_API_HALF_OPEN_CALLS=half_open,
    )
    metrics = Metrics(make_registry())
    return Breakers(settings, metrics), metrics


def gauge(metrics: Metrics, service: str = SERVICE) -> float | None:
    return metrics.registry.get_sample_value("icy_backend_circuit_breaker_state", {"api_name": service})


def transitions(metrics: Metrics, to_state: str) -> float:
    value = metrics.registry.get_sample_value(
        "icy_backend_circuit_breaker_transitions_total", {"api_name": SERVICE, "to_state": to_state}
    )
    return value or 0.0


async def fail(breakers: Breakers, exc: Exception) -> None:
    with pytest.raises(type(exc)):
        async with breakers.guard(SERVICE):
            raise exc


async def ok(breakers: Breakers) -> None:
    async with breakers.guard(SERVICE):
        pass


def test_defaults_and_overrides() -> None:
    breakers, metrics = make()
    assert breakers.state("base_rpc") == "closed"
    assert breakers.retry_after("base_rpc") is None
    for service in ("blockstream_api", "base_rpc", "coingecko", "mochi_pay"):
        assert gauge(metrics, service) == 0
    assert breakers._services["base_rpc"].threshold == 5
    assert breakers._services["base_rpc"].ttl == 120.0
    assert breakers._services[SERVICE].ttl == 0.2


@pytest.mark.anyio
async def test_full_cycle(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="icy_backend.breakers")
    breakers, metrics = make(threshold=3, ttl=0.2)
    for _ in range(2):
        await fail(breakers, UpstreamTimeout(SERVICE, "read"))
    assert breakers.state(SERVICE) == "closed"
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 503))
    assert breakers.state(SERVICE) == "open"
    assert gauge(metrics) == 2
    assert transitions(metrics, "open") == 1
    retry_after = breakers.retry_after(SERVICE)
    assert retry_after is not None
    assert 0 < retry_after <= 0.2

    # Open: rejected without running the body, with our own error and no purgatory traceback.
    ran = False
    with pytest.raises(CircuitOpenError) as info:
        async with breakers.guard(SERVICE):
            ran = True
    assert not ran
    assert info.value.service == SERVICE
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert info.value.retry_after is not None
    assert info.value.retry_after > 0

    await anyio.sleep(0.25)
    assert breakers.state(SERVICE) == "half_open"
    assert gauge(metrics) == 1

    # Half-open: one trial at a time, the rest rejected.
    entered = anyio.Event()
    release = anyio.Event()

    async def trial() -> None:
        async with breakers.guard(SERVICE):
            entered.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(trial)
        await entered.wait()
        assert transitions(metrics, "half_open") == 1
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                await ok(breakers)
        release.set()
    assert breakers.state(SERVICE) == "closed"
    assert gauge(metrics) == 0
    assert transitions(metrics, "closed") == 1
    await ok(breakers)
    messages = [r.getMessage() for r in caplog.records if r.name == "icy_backend.breakers"]
    assert messages == [
        f"circuit breaker {SERVICE} -> open",
        f"circuit breaker {SERVICE} -> half_open",
        f"circuit breaker {SERVICE} -> closed",
    ]


@pytest.mark.anyio
async def test_failed_trial_reopens() -> None:
    breakers, metrics = make(threshold=1, ttl=0.1)
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 500))
    await anyio.sleep(0.15)
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 500))
    assert breakers.state(SERVICE) == "open"
    assert transitions(metrics, "open") == 2


@pytest.mark.anyio
async def test_half_open_calls_setting_admits_that_many() -> None:
    breakers, _ = make(threshold=1, ttl=0.05, half_open=2)
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 500))
    await anyio.sleep(0.1)
    inside = 0
    release = anyio.Event()
    both = anyio.Event()

    async def trial() -> None:
        nonlocal inside
        async with breakers.guard(SERVICE):
            inside += 1
            if inside == 2:
                both.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(trial)
        tg.start_soon(trial)
        await both.wait()
        with pytest.raises(CircuitOpenError):
            await ok(breakers)
        release.set()
    assert breakers.state(SERVICE) == "closed"


@pytest.mark.anyio
async def test_answers_are_not_failures() -> None:
    breakers, _ = make(threshold=1)
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 404))
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 400))
    await fail(breakers, JsonRpcError(SERVICE, 3, "execution reverted"))
    await fail(breakers, JsonRpcError(SERVICE, -32000, "nonce too low"))
    await fail(breakers, JsonRpcError(SERVICE, -32602, "invalid params"))
    assert breakers.state(SERVICE) == "closed"
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 429))
    assert breakers.state(SERVICE) == "open"


@pytest.mark.anyio
async def test_answers_do_not_reset_the_failure_streak() -> None:
    """A 4xx (or a revert) between failures is no success: the streak goes on and the breaker opens."""
    breakers, metrics = make(threshold=3)
    await fail(breakers, UpstreamTimeout(SERVICE, "read", "op"))
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 500))
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 404))
    await fail(breakers, JsonRpcError(SERVICE, 3, "execution reverted"))
    assert breakers.state(SERVICE) == "closed"
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 503))
    assert breakers.state(SERVICE) == "open"
    assert transitions(metrics, "open") == 1


@pytest.mark.anyio
async def test_an_answer_does_not_close_a_half_open_breaker() -> None:
    breakers, _ = make(threshold=1, ttl=0.05)
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 500))
    await anyio.sleep(0.1)
    assert breakers.state(SERVICE) == "half_open"
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 404))
    assert breakers.state(SERVICE) == "half_open"
    await ok(breakers)
    assert breakers.state(SERVICE) == "closed"


@pytest.mark.anyio
async def test_jsonrpc_transport_error_is_a_failure() -> None:
    breakers, _ = make(threshold=1)
    await fail(breakers, JsonRpcError(SERVICE, -32603, "internal error"))
    assert breakers.state(SERVICE) == "open"


@pytest.mark.anyio
async def test_cancellation_neither_opens_nor_closes() -> None:
    breakers, _ = make(threshold=1, ttl=0.05)
    for _ in range(3):
        with anyio.move_on_after(0.01):
            async with breakers.guard(SERVICE):
                await anyio.sleep(1)
    assert breakers.state(SERVICE) == "closed"
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 500))
    await anyio.sleep(0.1)
    # A cancelled trial call leaves the breaker half-open (purgatory alone would close it) and frees the slot.
    with anyio.move_on_after(0.01):
        async with breakers.guard(SERVICE):
            await anyio.sleep(1)
    assert breakers.state(SERVICE) == "half_open"
    await ok(breakers)
    assert breakers.state(SERVICE) == "closed"


@pytest.mark.anyio
async def test_rejections_do_not_grow_a_traceback() -> None:
    breakers, _ = make(threshold=1, ttl=60)
    await fail(breakers, UpstreamHTTPStatus(SERVICE, 500))
    opened = breakers._services[SERVICE].breaker.context._state
    for _ in range(50):
        with pytest.raises(CircuitOpenError):
            await ok(breakers)
    assert opened.__traceback__ is None


@pytest.mark.anyio
async def test_call_helper() -> None:
    breakers, _ = make()

    async def value() -> int:
        return 7

    assert await breakers.call(SERVICE, value) == 7
