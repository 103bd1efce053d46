"""The database check against real PostgreSQL, SQLite, and a database server that never answers."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from checks.database import database_check
from checks.runner import Runner
from checks.service import build_health
from icy_backend.db.engine import make_engine
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from tests.checks.conftest import (
    PASS_TOKEN,
    assert_redacted,
    hanging_listener,
    make_settings,
    postgres_engine,
    serve,
)


async def _run(engine: AsyncEngine, timeout: float = 2.0) -> dict[str, object]:
    [result] = await Runner().run_all([database_check(engine, timeout=timeout)], deadline=timeout)
    return {"status": result.status, "error": result.error, **result.metadata}


@pytest.mark.anyio
@pytest.mark.postgres
async def test_postgres_healthy_with_driver_and_pool() -> None:
    async with postgres_engine() as engine:
        result = await _run(engine)
    assert result["status"] == "healthy"
    assert result["error"] is None
    assert result["driver"] == "postgresql+asyncpg"
    pool = result["connection_pool"]
    assert isinstance(pool, dict)
    assert set(pool) == {"size", "checked_out", "overflow"}
    assert pool["size"] >= 1  # the connection used by the check (and the fixture's) is pooled
    assert pool["checked_out"] == 0
    assert pool["overflow"] == 0


@pytest.mark.anyio
async def test_sqlite_healthy(tmp_path: Path) -> None:
    engine = make_engine(make_settings(), f"sqlite+aiosqlite:///{tmp_path / 'h.sqlite3'}")
    try:
        result = await _run(engine)
    finally:
        await engine.dispose()
    assert result["status"] == "healthy"
    assert result["driver"] == "sqlite+aiosqlite"
    pool = result["connection_pool"]
    assert isinstance(pool, dict)
    assert all(isinstance(v, int) and v >= 0 for v in pool.values())


@pytest.mark.anyio
async def test_refused_database_is_a_short_class(tmp_path: Path) -> None:
    with anyio.fail_after(5):
        async with hanging_listener() as listener:
            port = listener.port
    # Nobody listens on that port any more: connection refused.
    engine = make_engine(make_settings(), f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test")
    try:
        result = await _run(engine)
    finally:
        await engine.dispose()
    assert result["status"] == "unhealthy"
    assert result["error"] in ("connection_refused", "connection_error")


@pytest.mark.anyio
async def test_hanging_database_answers_503_within_sla() -> None:
    """The PostgreSQL host accepts TCP and never answers: /api/v1/health/db is 503 well within 500 ms, the
    connection attempt is really cancelled (the socket gets closed), and nothing leaks into the body."""
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    metrics = Metrics(make_registry())
    with anyio.fail_after(10):
        async with hanging_listener() as listener:
            url = f"postgresql+asyncpg://postgres:{PASS_TOKEN}@127.0.0.1:{listener.port}/test"
            engine = make_engine(make_settings(), url)
            try:
                health = build_health(make_settings(), metrics, lifecycle, engine)
                async with serve(health, lifecycle) as client:
                    start = time.monotonic()
                    response = await client.get("/api/v1/health/db")
                    elapsed = time.monotonic() - start
                    ready = await client.get("/readyz")
                # The cancelled connection attempt closed its socket.
                with anyio.fail_after(2):
                    while listener.closed < listener.accepted:
                        await anyio.sleep(0.01)
            finally:
                await engine.dispose()
    assert response.status_code == 503
    assert elapsed < 0.5
    body = response.json()
    assert body["status"] == "unhealthy"
    db = body["checks"]["database"]
    assert db["status"] == "unhealthy"
    assert db["error"] == "timeout"
    assert db["metadata"]["driver"] == "postgresql+asyncpg"
    assert_redacted(response.text)
    assert ready.status_code == 503
    assert_redacted(ready.text)
    assert listener.accepted >= 1
    value = metrics.registry.get_sample_value
    assert value("icy_backend_health_check_status", {"check": "database"}) == 0.0
    assert value("icy_backend_health_checks_total", {"check": "database", "status": "unhealthy"}) == 2.0
