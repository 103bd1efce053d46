"""The health routes through the real app factory (lifespan wires ``build_health`` into the state)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from icy_backend.app import create_app
from icy_backend.settings import load_settings
from icy_backend.sim.combined import Simulators
from icy_backend.sim.faults import Fault
from tests.asgi import client_for

pytestmark = pytest.mark.anyio


async def test_health_endpoints_through_create_app(tmp_path: Path) -> None:
    settings = load_settings(
        {"APP_ENV": "test", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.sqlite3"}, env_file=None
    )
    sims = Simulators(chain_id=settings.chain_id)
    sims.prices.faults.set(Fault(path="*", status=503))
    app = create_app(settings, transport=httpx.ASGITransport(app=sims.app), run_jobs=False)
    async with client_for(app) as client:
        ready = await client.get("/readyz?verbose")
        db = await client.get("/api/v1/health/db")
        external = await client.get("/api/v1/health/external")
        metrics = await client.get("/metrics")
    assert ready.status_code == 200, ready.text
    assert ready.text.endswith("readyz check passed\n")
    assert db.status_code == 200
    assert db.json()["checks"]["database"]["metadata"]["driver"] == "sqlite+aiosqlite"
    assert external.status_code == 200
    body = external.json()
    assert body["status"] == "degraded"
    assert body["checks"]["coingecko"]["error"] == "http_5xx"
    assert body["checks"]["blockstream_api"]["status"] == "healthy"
    assert body["checks"]["base_rpc"]["status"] == "healthy"
    assert 'icy_backend_health_check_status{check="coingecko"} 0.0' in metrics.text
    assert 'icy_backend_health_check_status{check="database"} 1.0' in metrics.text
