"""GET /metrics: negotiation, gzip, token, and an exposition that parses."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware

from icy_backend.metrics import Metrics
from icy_backend.metrics.endpoint import metrics_route
from icy_backend.metrics.middleware import HttpMetricsMiddleware


def app_with(metrics: Metrics, token: str | None) -> Starlette:
    return Starlette(
        routes=[metrics_route(metrics, token)],
        middleware=[Middleware(HttpMetricsMiddleware, metrics=metrics)],
    )


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.anyio
async def test_text_format_by_default_and_parses(metrics: Metrics) -> None:
    metrics.http_collector.series("GET", '/a"b\\c', "200").observe(0.001, 10)  # escaping survives a round trip
    async with client(app_with(metrics, None)) as c:
        await c.get("/metrics")  # the scrape itself is counted, by its route template
        r = await c.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "content-encoding" not in r.headers
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families["icy_backend_build_info"].samples[0].value == 1
    assert "process_cpu_seconds" in families or "process_cpu_seconds_total" in families
    requests = families["icy_backend_http_requests"]
    by_path = {s.labels["path"]: s.value for s in requests.samples if s.name.endswith("_total")}
    assert by_path['/a"b\\c'] == 1
    assert by_path["/metrics"] == 1
    breaker = families["icy_backend_circuit_breaker_state"]
    assert {s.labels["api_name"] for s in breaker.samples} >= {"base_rpc", "blockstream_api"}


@pytest.mark.anyio
async def test_openmetrics_when_asked(metrics: Metrics) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    async with client(app_with(metrics, None)) as c:
        r = await c.get("/metrics", headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.text.endswith("# EOF\n")
    names = {f.name for f in parse_openmetrics(r.text)}
    assert "icy_backend_build_info" in names


@pytest.mark.anyio
async def test_plain_accept_gets_text(metrics: Metrics) -> None:
    async with client(app_with(metrics, None)) as c:
        r = await c.get("/metrics", headers={"Accept": "text/plain"})
    assert r.headers["content-type"].startswith("text/plain")
    assert "# EOF" not in r.text


@pytest.mark.anyio
async def test_gzip_when_accepted(metrics: Metrics) -> None:
    async with client(app_with(metrics, None)) as c:
        r = await c.get("/metrics", headers={"Accept-Encoding": "br, gzip;q=0.8"})
        raw = await c.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert r.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in r.headers["vary"]
    # httpx decoded it: the decoded text is a full exposition, smaller on the wire than uncompressed.
    assert "icy_backend_build_info" in r.text
    assert int(r.headers["content-length"]) < len(raw.content)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", "Basic s3cret-token", "s3cret-token", "Bearer s3cret-token2"],
)
async def test_token_required(metrics: Metrics, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with client(app_with(metrics, "s3cret-token")) as c:
        r = await c.get("/metrics", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "Unauthorized"}
    assert "s3cret" not in r.text


@pytest.mark.anyio
@pytest.mark.parametrize("authorization", ["Bearer s3cret-token", "bearer s3cret-token", "Bearer  s3cret-token "])
async def test_token_accepted(metrics: Metrics, authorization: str) -> None:
    async with client(app_with(metrics, "s3cret-token")) as c:
        r = await c.get("/metrics", headers={"Authorization": authorization})
    assert r.status_code == 200
    assert "icy_backend_build_info" in r.text


@pytest.mark.anyio
async def test_open_without_token(metrics: Metrics) -> None:
    async with client(app_with(metrics, "")) as c:
        r = await c.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 200
