"""``GET /api/v1/health/jobs`` served by hypercorn on loopback: healthy, degraded, unhealthy, standby."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette

from icy_backend.metrics import Metrics
from icy_backend.routes.jobs_health import routes
from jobs.context import JobContext
from jobs.definition import JobDefinition
from jobs.runtime import JobRuntime
from tests.jobs.conftest import fast_settings, job, make_runtime, noop, sample, wait_for

URL = "/api/v1/health/jobs"
RUNS = "icy_backend_background_job_runs_total"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serving(runtime: JobRuntime) -> AsyncIterator[httpx.AsyncClient]:
    """A Starlette app with the jobs routes whose lifespan runs ``runtime`` in its task group."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.run)
            yield {"jobs": runtime}
            runtime.lifecycle.begin_drain()
            tg.cancel_scope.cancel()

    app = Starlette(routes=routes, lifespan=lifespan)
    config = Config()
    port = _free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await _wait_up(client)
            try:
                yield client
            finally:
                stop.set()


async def _wait_up(client: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        while True:
            try:
                await client.get("/nothing")
                return
            except httpx.TransportError:
                await anyio.sleep(0.02)


async def _get(client: httpx.AsyncClient) -> tuple[int, dict[str, Any], float]:
    started = time.perf_counter()
    response = await client.get(URL)
    return response.status_code, response.json(), (time.perf_counter() - started) * 1000


def _runtime(metrics: Metrics, definitions: Sequence[JobDefinition], **kwargs: Any) -> JobRuntime:
    return make_runtime(metrics, definitions, **kwargs)


@pytest.mark.anyio
async def test_healthy_then_degraded_then_unhealthy(metrics: Metrics) -> None:
    fail = False

    async def flaky(ctx: JobContext) -> None:
        if fail:
            raise ConnectionRefusedError("refused by http://10.0.0.5:8332/wallet?key=abc")

    runtime = _runtime(metrics, [job("flaky", flaky, interval=0.1), job("steady", noop, interval=0.1)])
    async with serving(runtime) as client:
        await wait_for(lambda: sample(metrics, RUNS, job_name="flaky", status="success") >= 1)
        code, body, elapsed_ms = await _get(client)
        assert code == 200
        assert body["status"] == "healthy"
        assert body["role"] == "single"
        assert set(body) == {"status", "timestamp", "duration_ms", "role", "jobs", "summary"}
        assert body["timestamp"].endswith("Z")
        assert 0 <= body["duration_ms"] < 100
        assert elapsed_ms < 100
        assert set(body["jobs"]) == {"flaky", "steady"}
        assert body["summary"]["total_jobs"] == 2
        assert set(body["summary"]) == {
            "total_jobs",
            "running_jobs",
            "healthy_jobs",
            "unhealthy_jobs",
            "stalled_jobs",
            "late_jobs",
            "last_update_time",
            "leader",
        }
        assert body["summary"]["leader"] == "self"
        assert body["jobs"]["steady"]["late"] is False
        assert body["jobs"]["steady"]["skipped_count"] == 0

        fail = True
        before = sample(metrics, RUNS, job_name="flaky", status="failed")
        await wait_for(lambda: sample(metrics, RUNS, job_name="flaky", status="failed") == before + 1)
        code, body, _ = await _get(client)
        assert (code, body["status"]) == (200, "degraded")  # the old service sent 206 here
        assert body["jobs"]["flaky"]["status"] == "failed"
        assert body["jobs"]["flaky"]["last_error"] == "connection_refused"
        assert body["summary"]["unhealthy_jobs"] == 1

        await wait_for(lambda: sample(metrics, RUNS, job_name="flaky", status="failed") >= 3)
        code, body, _ = await _get(client)
        assert (code, body["status"]) == (503, "unhealthy")
        assert body["jobs"]["flaky"]["consecutive_failures"] >= 3
        text = str(body)
        for leak in ("10.0.0.5", "key=abc", "Traceback", "ConnectionRefusedError", "refused by"):
            assert leak not in text


@pytest.mark.anyio
async def test_stalled_job_is_unhealthy(metrics: Metrics) -> None:
    async def hangs(ctx: JobContext) -> None:
        await anyio.sleep(30)

    runtime = _runtime(metrics, [job("hangs", hangs, interval=5, timeout=20, stall_after=0.1)])
    async with serving(runtime) as client:
        await wait_for(lambda: runtime.report().stalled == 1)
        code, body, _ = await _get(client)
    assert (code, body["status"]) == (503, "unhealthy")
    assert body["summary"]["stalled_jobs"] == 1
    assert body["jobs"]["hangs"]["status"] == "stalled"


@pytest.mark.anyio
async def test_not_yet_run_two_intervals_after_startup_is_degraded(metrics: Metrics) -> None:
    settings = fast_settings(JOB_FIRST_RUN_DELAY="30")
    runtime = _runtime(metrics, [job("j", noop, interval=0.1)], settings=settings)
    async with serving(runtime) as client:
        code, body, _ = await _get(client)
        assert (code, body["status"]) == (200, "healthy")  # just started
        await anyio.sleep(0.25)
        code, body, _ = await _get(client)
    assert (code, body["status"]) == (200, "degraded")
    assert body["jobs"]["j"]["status"] == "pending"


@pytest.mark.anyio
async def test_without_a_runtime_the_endpoint_is_unhealthy() -> None:
    app = Starlette(routes=routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"


@pytest.mark.anyio
async def test_body_matches_the_openapi_schema(metrics: Metrics) -> None:
    """The jobs body (leader/single shape, with late, skipped_count and summary.leader) fits the documented schema."""
    from icy_backend.routes.openapi_doc import SCHEMAS

    jsonschema = pytest.importorskip("jsonschema")  # installed with the test extra (schemathesis needs it)

    async def slow(ctx: JobContext) -> None:
        await anyio.sleep(0.25)

    runtime = _runtime(metrics, [job("slow", slow, interval=0.1), job("steady", noop, interval=0.1)])
    async with serving(runtime) as client:
        await wait_for(lambda: runtime.statuses()["slow"]["skipped_count"] >= 1)
        _, body, _ = await _get(client)
    schema = {"$ref": "#/components/schemas/HealthResult", "components": {"schemas": SCHEMAS}}
    jsonschema.validate(body, schema)
    assert body["jobs"]["slow"]["skipped_count"] >= 1
    bad = {**body, "summary": {**body["summary"], "leader": "somebody"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
