"""Load (issue 10): 200 concurrent connections on the health endpoints, /metrics and the cached oracle route.

Zero errors, and every health endpoint's p99 within ``P99_RATIO_BOUND`` times the p99 of ``/healthz`` (the cheapest
route: the event loop only) measured under the same load right before it — a paired ratio, so it holds on a busy
machine and with either load generator, and fails when a health endpoint starts doing slow work under load.
The absolute SLAs of SPEC §5 (``/metrics`` and the oracle route have none) are asserted with ICY_E2E_LOAD_STRICT=1.
The suite runs a short bounded phase per endpoint (``ICY_E2E_LOAD_SECONDS``, default 5;
``ICY_E2E_LOAD_CONNECTIONS``, default 200); ``python -m bench.load`` runs the full 30 s version. wrk is used when
installed; otherwise a bounded in-process (anyio, raw HTTP/1.1) generator runs in this process — on 2 cores it
competes with the server, so with it the p99 bounds are reported, not asserted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import pytest

from bench.load import ENDPOINTS, HEADER, P99_SLA_MS, LoadResult, have_wrk, own_service, run_load
from tests.pg import drop_database, recreate_database, require_pg, unique_db_name

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SECONDS = float(os.environ.get("ICY_E2E_LOAD_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("ICY_E2E_LOAD_CONNECTIONS", "200"))
MAX_REQUESTS = 3000  # in-process fallback: bound per endpoint
# With a closed-loop generator, latency = connections / throughput (Little's law): the p99 bound is a throughput
# bound (see the report in bench/load.py); ICY_E2E_LOAD_STRICT=1 asserts it, by default it is reported.
STRICT = os.environ.get("ICY_E2E_LOAD_STRICT", "0") == "1"
# ICY_E2E_LOAD_GENERATOR=python forces the in-process generator even when wrk is installed.
USE_WRK = have_wrk() and os.environ.get("ICY_E2E_LOAD_GENERATOR", "auto") != "python"
# Health endpoints answer from memory or a cached result (the database check is one short query): under the same
# load their p99 stays within this factor of /healthz's. Measured ratios are 1.2-1.8 (bench/README.md).
P99_RATIO_BOUND = 5.0


@dataclass
class Loaded:
    base_url: str
    results: list[LoadResult] = field(default_factory=list)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Loaded]:
    require_pg()
    name = unique_db_name("icy_e2e_load")
    db_url = anyio.run(recreate_database, name)
    results: list[LoadResult] = []
    try:
        with own_service(tmp_path_factory.mktemp("load"), db_url) as base_url:
            yield Loaded(base_url, results)
    finally:
        anyio.run(drop_database, name)
        _print(request, results)


def _load(base_url: str, endpoint: str) -> list[LoadResult]:
    return run_load(
        base_url, (endpoint,), seconds=SECONDS, connections=CONNECTIONS, use_wrk=USE_WRK, max_requests=MAX_REQUESTS
    )


def _print(request: pytest.FixtureRequest, results: list[LoadResult]) -> None:
    lines = [
        "",
        f"load: {CONNECTIONS} connections, {SECONDS:.0f} s per endpoint (health endpoints after a /healthz baseline)",
        HEADER,
        *(r.line() for r in results),
    ]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        for line in lines:
            reporter.write_line(line)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoint_under_load(loaded: Loaded, endpoint: str) -> None:
    sla = P99_SLA_MS.get(endpoint)
    # The baseline runs right before the endpoint, so both see the same machine (other work comes and goes).
    baseline = _load(loaded.base_url, "/healthz")[0] if sla is not None and endpoint != "/healthz" else None
    (result,) = _load(loaded.base_url, endpoint)
    loaded.results += [r for r in (baseline, result) if r is not None]
    assert result.requests > 0
    if endpoint.startswith("/api/v1/oracle/"):
        # A business route: past MAX_CONCURRENT_REQUESTS (64) in flight the service refuses at once with 503
        # overloaded (SPEC §5), by design; socket errors and timeouts still count, and most requests are served.
        assert result.errors - result.non_2xx == 0, result
        assert result.non_2xx < result.requests / 2, result
    else:
        assert result.errors == 0, result
    if sla is None:
        return  # /metrics and the oracle route: throughput and latency reported only
    if baseline is not None:
        assert baseline.errors == 0, baseline
        ratio = result.p99_ms / max(baseline.p99_ms, 1.0)
        assert ratio <= P99_RATIO_BOUND, (endpoint, f"p99 {ratio:.2f}x the /healthz baseline", result, baseline)
    if USE_WRK and STRICT:
        assert result.p99_ms <= sla, result
