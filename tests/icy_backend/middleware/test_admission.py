"""Admission control (SPEC §5 overload): business requests past the cap are refused at once; probes never are."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from icy_backend.app import create_app
from icy_backend.metrics import Metrics, make_registry
from icy_backend.middleware.admission import AdmissionControlMiddleware, is_exempt
from icy_backend.settings import load_settings
from icy_backend.sim.combined import Simulators
from icy_backend.sim.faults import Fault
from tests.asgi import client_for

pytestmark = pytest.mark.anyio

REFUSED = "icy_backend_requests_refused_total"


def _refused(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(REFUSED, {"reason": "overloaded"})


async def test_overload_refuses_business_routes_while_probes_stay_ok(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "APP_ENV": "test",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.sqlite3",
            "MAX_CONCURRENT_REQUESTS": "2",
        },
        env_file=None,
    )
    sims = Simulators(chain_id=settings.chain_id)
    metrics = Metrics(make_registry())
    app = create_app(settings, metrics=metrics, transport=httpx.ASGITransport(app=sims.app), run_jobs=False)
    async with client_for(app) as client:
        assert _refused(metrics) == 0  # present from startup
        assert (await client.get("/readyz")).status_code == 200
        for sim_faults in (sims.esplora.faults, sims.evm.faults, sims.prices.faults, sims.mochi.faults):
            sim_faults.set(Fault(path="*", hang=True))
        async with anyio.create_task_group() as tg:
            for _ in range(2):  # two business requests stuck on hanging upstreams fill the cap
                tg.start_soon(client.get, "/api/v1/swap/info")
            await anyio.sleep(0.3)
            start = anyio.current_time()
            refused = await client.get("/api/v1/transactions")
            assert anyio.current_time() - start < 1.0  # at once, not queued
            assert refused.status_code == 503
            assert refused.json() == {"data": None, "error": "overloaded"}
            assert refused.headers["retry-after"] == "1"
            # Probes, liveness and scrapes are neither refused nor counted against the cap.
            for path in ("/readyz", "/livez", "/healthz", "/api/v1/health/db", "/api/v1/health/jobs"):
                assert (await client.get(path)).status_code == 200, path
            scrape = await client.get("/metrics")
            assert scrape.status_code == 200
            assert f'{REFUSED}{{reason="overloaded"}} 1.0' in scrape.text
            tg.cancel_scope.cancel()  # the stuck requests end (a client going away)
        # The cap frees with them.
        assert (await client.get("/api/v1/transactions")).status_code == 200
        assert _refused(metrics) == 1


def _blocking_app(limit: int, metrics: Metrics, release: anyio.Event) -> Starlette:
    async def slow(request: Request) -> Response:
        await release.wait()
        return JSONResponse({"ok": True})

    async def probe(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [Route("/work", slow), Route("/readyz", slow), Route("/api/v1/health/db", probe)]
    return Starlette(routes=routes, middleware=[Middleware(AdmissionControlMiddleware, limit=limit, metrics=metrics)])


async def test_exempt_paths_do_not_take_slots_and_the_cap_is_exact() -> None:
    metrics = Metrics(make_registry())
    release = anyio.Event()
    app = _blocking_app(3, metrics, release)
    statuses: list[int] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

        async def get(path: str) -> None:
            statuses.append((await client.get(path)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):  # slow probes in flight take no business slot
                tg.start_soon(get, "/readyz")
            for _ in range(3):
                tg.start_soon(get, "/work")
            await anyio.sleep(0.1)
            assert (await client.get("/work")).status_code == 503
            assert (await client.get("/api/v1/health/db")).status_code == 200
            release.set()
    assert statuses == [200] * 8
    assert _refused(metrics) == 1


def test_exempt_paths() -> None:
    for path in ("/healthz", "/livez", "/readyz", "/metrics", "/api/v1/health/external", "/api/v1/health/jobs"):
        assert is_exempt(path)
    for path in ("/api/v1/swap/info", "/api/v1/transactions", "/openapi.json", "/nope", "/api/v1/healthz"):
        assert not is_exempt(path)
