"""Runner, aggregation and metrics with synthetic checks."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from checks.model import HEALTHY, Check, CheckResult, Metadata, Outcome, Status, aggregate, http_status
from checks.redact import classify, strip_urls
from checks.runner import Runner, now_utc
from icy_backend.clients.errors import CircuitOpenError, UpstreamConnectionError, UpstreamHTTPStatus
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry


def sleeper(name: str, seconds: float, *, timeout: float = 1.0, critical: bool = True) -> Check:
    async def body(metadata: Metadata) -> Outcome:
        await anyio.sleep(seconds)
        return HEALTHY

    return Check(name, body, critical=critical, timeout=timeout)


@pytest.mark.anyio
async def test_checks_run_concurrently() -> None:
    checks = [sleeper(f"c{i}", 0.2) for i in range(3)]
    start = time.monotonic()
    results = await Runner().run_all(checks, deadline=1.0)
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == ["healthy"] * 3
    assert 0.19 <= elapsed < 0.4
    assert all(190 <= r.latency_ms < 400 for r in results)


@pytest.mark.anyio
async def test_deadline_cancels_the_check_body() -> None:
    reached_end = False
    cancelled = False

    async def body(metadata: Metadata) -> Outcome:
        nonlocal reached_end, cancelled
        metadata["phase"] = "started"
        try:
            await anyio.sleep(1.0)
        except anyio.get_cancelled_exc_class():
            cancelled = True
            raise
        reached_end = True
        return HEALTHY

    start = time.monotonic()
    results = await Runner().run_all([Check("slow", body, timeout=5.0), sleeper("fast", 0.0)], deadline=0.1)
    assert time.monotonic() - start < 0.3
    slow, fast = results
    assert slow.status == "unhealthy"
    assert slow.error == "timeout"
    assert slow.metadata == {"phase": "started"}  # metadata gathered before the deadline is kept
    assert fast.status == "healthy"
    assert cancelled
    await anyio.sleep(1.1)  # had the body kept running somewhere, it would have finished by now
    assert not reached_end


@pytest.mark.anyio
async def test_own_timeout_shorter_than_endpoint_deadline() -> None:
    [result] = await Runner().run_all([sleeper("s", 1.0, timeout=0.05)], deadline=1.0)
    assert result.error == "timeout"
    assert result.latency_ms < 200


@pytest.mark.anyio
async def test_exception_becomes_a_short_class_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def body(metadata: Metadata) -> Outcome:
        raise UpstreamConnectionError(
            "blockstream_api",
            "connect to https://user:hunter2@node.example:8443/v2/KEY123?apikey=Q9 refused",
            refused=True,
        )

    caplog.set_level(logging.WARNING, logger="checks")
    [result] = await Runner().run_all([Check("blockstream_api", body)], deadline=0.5)
    assert result.status == "unhealthy"
    assert result.error == "connection_refused"
    record = next(r for r in caplog.records if r.name == "checks")
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "connection_refused" in text
    assert "node.example" in text
    for secret in ("hunter2", "KEY123", "apikey", "Q9"):
        assert secret not in text


def test_strip_urls() -> None:
    assert strip_urls("GET https://u:p@h.io:8/x/y?k=v failed") == "GET https://h.io:8/… failed"
    assert strip_urls("postgresql+asyncpg://postgres:pw@db:5432/test") == "postgresql+asyncpg://db:5432/…"
    assert strip_urls("http://h/") == "http://h"


def test_classify_looks_through_wrappers() -> None:
    outer = RuntimeError("wrapped")
    outer.__cause__ = ConnectionRefusedError(111, "refused")
    assert classify(outer) == "connection_refused"
    assert classify(UpstreamHTTPStatus("x", 502)) == "http_5xx"
    assert classify(UpstreamHTTPStatus("x", 404)) == "http_4xx"
    assert classify(CircuitOpenError("x")) == "circuit_open"
    assert classify(TimeoutError()) == "timeout"
    assert classify(ValueError("boom")) == "internal_error"


def _result(status: Status, critical: bool) -> CheckResult:
    return CheckResult("x", status, 1.0, now_utc(), critical=critical)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], "healthy"),
        ([("healthy", True), ("healthy", False)], "healthy"),
        ([("degraded", True)], "degraded"),
        ([("degraded", False)], "degraded"),
        ([("unhealthy", False)], "degraded"),
        ([("unhealthy", False), ("healthy", True)], "degraded"),
        ([("unhealthy", True)], "unhealthy"),
        ([("unhealthy", True), ("degraded", False)], "unhealthy"),
        ([("degraded", True), ("unhealthy", True)], "unhealthy"),
        ([("healthy", True), ("unhealthy", False), ("degraded", True)], "degraded"),
    ],
)
def test_aggregation_matrix(results: list[tuple[Status, bool]], expected: Status) -> None:
    status = aggregate([_result(s, c) for s, c in results])
    assert status == expected
    assert http_status(status) == (503 if expected == "unhealthy" else 200)


@pytest.mark.anyio
async def test_metrics_per_check() -> None:
    registry = make_registry()
    runner = Runner(Metrics(registry))

    async def degraded(metadata: Metadata) -> Outcome:
        return Outcome("degraded")

    await runner.run_all([sleeper("ok", 0.0), Check("meh", degraded), sleeper("slow", 1, timeout=0.01)], 0.5)
    value = registry.get_sample_value
    assert value("icy_backend_health_check_status", {"check": "ok"}) == 1.0
    assert value("icy_backend_health_check_status", {"check": "meh"}) == 0.5
    assert value("icy_backend_health_check_status", {"check": "slow"}) == 0.0
    assert value("icy_backend_health_checks_total", {"check": "slow", "status": "unhealthy"}) == 1.0
    assert value("icy_backend_health_checks_total", {"check": "ok", "status": "healthy"}) == 1.0
    assert value("icy_backend_health_check_duration_seconds_count", {"check": "meh"}) == 1.0


def test_deadlines_stay_below_the_slas() -> None:
    from checks.service import SLAS, Deadlines

    d = Deadlines()
    assert (d.readyz, d.database, d.external) == (0.4, 0.4, 1.5)
    assert SLAS == {"readyz": 0.5, "database": 0.5, "external": 2.0}
    with pytest.raises(ValueError, match="SLA"):
        Deadlines(external=2.5)
