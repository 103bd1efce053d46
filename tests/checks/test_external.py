"""External checks through the real clients against the simulators (faults injected per simulator)."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from checks.service import CacheTTL, build_health
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from icy_backend.sim.faults import Fault
from tests.checks.conftest import (
    CHAIN_ID,
    Upstreams,
    assert_redacted,
    make_breakers,
    make_settings,
    open_breaker,
    serve,
    upstreams,
)

EXTERNAL = "/api/v1/health/external"


def _health(ups: Upstreams, *, ttl: CacheTTL | None = None, chain_id: int = CHAIN_ID) -> Any:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    settings = make_settings(BLOCKCHAIN_CHAIN_ID=chain_id)
    health = build_health(settings, ups.metrics, lifecycle, None, ups.clients, ups.breakers, ttl=ttl or CacheTTL())
    return health, lifecycle


async def _get(ups: Upstreams, *, ttl: CacheTTL | None = None, chain_id: int = CHAIN_ID) -> Any:
    health, lifecycle = _health(ups, ttl=ttl, chain_id=chain_id)
    async with serve(health, lifecycle) as client:
        response = await client.get(EXTERNAL)
    assert_redacted(response.text)
    return response


@pytest.mark.anyio
async def test_all_upstreams_healthy() -> None:
    async with upstreams() as ups:
        response = await _get(ups)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["checks"]) == {"blockstream_api", "base_rpc", "coingecko", "mochi_pay"}
    for check in body["checks"].values():
        assert check["status"] == "healthy"
        assert "error" not in check
        assert check["metadata"]["circuit_breaker_state"] == "closed"
        assert isinstance(check["latency_ms"], int | float)
    assert body["checks"]["base_rpc"]["metadata"]["chain_id"] == CHAIN_ID
    assert body["checks"]["blockstream_api"]["metadata"]["block_height"] >= 0
    # one probe request per upstream (the EVM probe batches eth_chainId + eth_blockNumber)
    assert ups.requests() == {"esplora": 1, "evm": 1, "prices": 1, "mochi": 1}


@pytest.mark.anyio
async def test_mochi_not_configured_is_not_registered() -> None:
    async with upstreams(with_mochi=False) as ups:
        response = await _get(ups)
    assert set(response.json()["checks"]) == {"blockstream_api", "base_rpc", "coingecko"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(path="*", status=500), "http_5xx"),
        (Fault(path="*", status=503), "http_5xx"),
        (Fault(path="*", status=404), "http_4xx"),
        (Fault(path="*", malformed=True), "invalid_response"),
        (Fault(path="*", reset=True), "connection_error"),
    ],
)
async def test_esplora_faults_become_short_classes(fault: Fault, error: str) -> None:
    async with upstreams() as ups:
        ups.esplora.faults.set(fault)
        response = await _get(ups)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    check = body["checks"]["blockstream_api"]
    assert check["status"] == "unhealthy"
    assert check["error"] == error
    assert body["checks"]["base_rpc"]["status"] == "healthy"


@pytest.mark.anyio
async def test_wrong_chain_id_is_chain_id_mismatch() -> None:
    async with upstreams() as ups:
        response = await _get(ups, chain_id=8453)
    assert response.status_code == 503
    check = response.json()["checks"]["base_rpc"]
    assert check["error"] == "chain_id_mismatch"
    assert check["metadata"]["chain_id"] == CHAIN_ID


@pytest.mark.anyio
async def test_non_critical_failure_is_degraded_200() -> None:
    async with upstreams() as ups:
        ups.prices.faults.set(Fault(path="*", status=500))
        ups.mochi.faults.set(Fault(path="*", hang=True))
        response = await _get(ups)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["coingecko"]["error"] == "http_5xx"
    assert body["checks"]["mochi_pay"]["error"] == "timeout"


@pytest.mark.anyio
async def test_open_breaker_skips_the_probe_and_reports_circuit_open() -> None:
    async with upstreams() as ups:
        await open_breaker(ups.breakers, "blockstream_api")
        response = await _get(ups)
    assert response.status_code == 503
    check = response.json()["checks"]["blockstream_api"]
    assert check["status"] == "unhealthy"
    assert check["error"] == "circuit_open"
    assert check["metadata"]["circuit_breaker_state"] == "open"
    assert ups.requests()["esplora"] == 0  # no upstream request while the breaker is open


@pytest.mark.anyio
async def test_open_non_critical_breaker_is_degraded() -> None:
    async with upstreams() as ups:
        await open_breaker(ups.breakers, "coingecko")
        response = await _get(ups)
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["coingecko"]["error"] == "circuit_open"
    assert ups.requests()["prices"] == 0


@pytest.mark.anyio
async def test_half_open_breaker_probes_and_reports_degraded() -> None:
    metrics = Metrics(make_registry())
    breakers = make_breakers(metrics, ttl=0.1)
    async with upstreams(metrics, breakers) as ups:
        await open_breaker(ups.breakers, "base_rpc")
        await anyio.sleep(0.15)
        assert ups.breakers.state("base_rpc") == "half_open"
        response = await _get(ups)
        assert ups.breakers.state("base_rpc") == "half_open"  # the probe bypasses the breaker
    assert response.status_code == 200
    check = response.json()["checks"]["base_rpc"]
    assert check["status"] == "degraded"
    assert check["metadata"]["circuit_breaker_state"] == "half_open"
    assert ups.requests()["evm"] == 1


@pytest.mark.anyio
async def test_every_upstream_hanging_answers_503_within_sla_and_cancels_requests() -> None:
    async with upstreams() as ups:
        for faults in ups.all_faults:
            faults.set(Fault(path="*", hang=True))
        health, lifecycle = _health(ups)
        async with serve(health, lifecycle) as client:
            start = time.monotonic()
            response = await client.get(EXTERNAL)
            elapsed = time.monotonic() - start
        transports = ups.transports.values()
        in_flight = [t.in_flight for t in transports]
        cancelled = [t.cancelled for t in transports]
    assert response.status_code == 503
    assert 1.4 < elapsed < 2.0
    body = response.json()
    assert {c["error"] for c in body["checks"].values()} == {"timeout"}
    assert body["duration_ms"] < 2000
    assert_redacted(response.text)
    assert in_flight == [0, 0, 0, 0]  # nothing keeps running after the answer
    assert cancelled == [1, 1, 1, 1]  # each hung request was cancelled


@pytest.mark.anyio
async def test_hundred_concurrent_probes_make_one_upstream_request_per_check() -> None:
    async with upstreams() as ups:
        for faults in ups.all_faults:
            faults.set(Fault(path="*", latency_ms=100))
        health, lifecycle = _health(ups)
        async with serve(health, lifecycle) as client:
            responses: list[Any] = []

            async def probe() -> None:
                responses.append(await client.get(EXTERNAL))

            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(probe)
            # Within the 10 s TTL the next probe reads the cache and shows the result's age.
            await anyio.sleep(0.05)
            again = await client.get(EXTERNAL)
    assert [r.status_code for r in responses] == [200] * 100
    assert ups.requests() == {"esplora": 1, "evm": 1, "prices": 1, "mochi": 1}
    first = responses[0].json()
    later = again.json()
    for name, check in later["checks"].items():
        assert check["checked_at"] == first["checks"][name]["checked_at"]
    assert later["timestamp"] > first["timestamp"]


@pytest.mark.anyio
async def test_ietf_format_for_external() -> None:
    async with upstreams() as ups:
        ups.prices.faults.set(Fault(path="*", status=500))
        health, lifecycle = _health(ups)
        async with serve(health, lifecycle) as client:
            response = await client.get(EXTERNAL, headers={"Accept": "application/health+json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/health+json")
    body = json.loads(response.text)
    assert body["status"] == "warn"
    assert body["checks"]["coingecko:responseTime"][0]["status"] == "fail"
    assert body["checks"]["coingecko:responseTime"][0]["output"] == "http_5xx"
    assert body["checks"]["base_rpc:responseTime"][0]["status"] == "pass"
    assert_redacted(response.text)
