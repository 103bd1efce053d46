"""/readyz and the health routes through a minimal Starlette app (lifespan yields the state)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from checks.model import Check, Metadata, Outcome
from checks.service import HealthService, build_health
from icy_backend.db.engine import make_engine
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from tests.checks.conftest import assert_redacted, hanging_listener, make_settings, serve

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _sqlite_health(tmp_path: Path, lifecycle: Lifecycle) -> tuple[HealthService, Any]:
    engine = make_engine(make_settings(), f"sqlite+aiosqlite:///{tmp_path / 'r.sqlite3'}")
    return build_health(make_settings(), Metrics(make_registry()), lifecycle, engine), engine


def validate_ietf(body: dict[str, Any]) -> None:
    """draft-inadarei-api-health-check: the fields we send, with their types and vocabularies."""
    assert body["status"] in ("pass", "warn", "fail")
    assert isinstance(body["checks"], dict)
    for key, items in body["checks"].items():
        assert re.fullmatch(r"[^:]+:[^:]+", key), key
        assert isinstance(items, list)
        assert items
        for item in items:
            assert set(item) <= {"componentId", "observedValue", "observedUnit", "status", "time", "output"}
            assert item["status"] in ("pass", "warn", "fail")
            assert isinstance(item["observedValue"], int | float)
            assert item["observedUnit"] == "ms"
            assert RFC3339.match(item["time"])
            assert ("output" in item) == (item["status"] != "pass")


@pytest.mark.anyio
async def test_readyz_lifecycle(tmp_path: Path) -> None:
    lifecycle = Lifecycle()
    health, engine = _sqlite_health(tmp_path, lifecycle)
    try:
        async with serve(health, lifecycle) as client:
            before = await client.get("/readyz")
            lifecycle.mark_started()
            ready = await client.get("/readyz")
            lifecycle.begin_drain()
            draining = await client.get("/readyz")  # at once, despite the 1 s result cache
    finally:
        await engine.dispose()
    assert before.status_code == 503
    assert before.json()["checks"]["started"]["error"] == "not_started"
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "healthy"
    assert set(body["checks"]) == {"started", "draining", "database"}
    assert RFC3339.match(body["timestamp"])
    assert isinstance(body["duration_ms"], int | float)
    for check in body["checks"].values():
        assert set(check) == {"status", "latency_ms", "checked_at", "metadata"}
        assert RFC3339.match(check["checked_at"])
    assert body["checks"]["database"]["metadata"]["driver"] == "sqlite+aiosqlite"
    assert draining.status_code == 503
    assert draining.json()["checks"]["draining"]["error"] == "draining"


@pytest.mark.anyio
async def test_readyz_verbose_and_exclude(tmp_path: Path) -> None:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    health, engine = _sqlite_health(tmp_path, lifecycle)
    try:
        async with serve(health, lifecycle) as client:
            ok = await client.get("/readyz?verbose")
            excluded = await client.get("/readyz", params=[("verbose", ""), ("exclude", "database")])
            unknown = await client.get(
                "/readyz", params=[("verbose", "1"), ("exclude", "nope<script>"), ("exclude", "draining")]
            )
            lifecycle.begin_drain()
            failed = await client.get("/readyz?verbose=true")
    finally:
        await engine.dispose()
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert ok.text == "[+]started ok\n[+]draining ok\n[+]database ok\nreadyz check passed\n"
    assert excluded.text == "[+]started ok\n[+]draining ok\n[+]database excluded: ok\nreadyz check passed\n"
    assert unknown.status_code == 200
    lines = unknown.text.splitlines()
    assert 'warn: some health checks cannot be excluded: no matches for "nopescript"' in lines
    assert 'warn: health check "draining" cannot be excluded' in lines
    assert "[+]draining ok" in lines
    assert failed.status_code == 503
    assert "[-]draining failed: reason withheld" in failed.text.splitlines()
    assert failed.text.endswith("readyz check failed\n")


@pytest.mark.anyio
async def test_readyz_with_a_hanging_database_fails_within_sla() -> None:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    with anyio.fail_after(10):
        async with hanging_listener() as listener:
            engine = make_engine(make_settings(), f"postgresql+asyncpg://postgres@127.0.0.1:{listener.port}/t")
            try:
                health = build_health(make_settings(), None, lifecycle, engine)
                async with serve(health, lifecycle) as client:
                    start = anyio.current_time()
                    response = await client.get("/readyz?verbose")
                    elapsed = anyio.current_time() - start
            finally:
                await engine.dispose()
    assert response.status_code == 503
    assert elapsed < 0.5
    assert "[-]database failed: reason withheld" in response.text
    assert_redacted(response.text)


@pytest.mark.anyio
async def test_readyz_caches_the_database_for_one_second(tmp_path: Path) -> None:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    health, engine = _sqlite_health(tmp_path, lifecycle)
    try:
        async with serve(health, lifecycle) as client:
            first = (await client.get("/readyz")).json()["checks"]
            second = (await client.get("/readyz")).json()["checks"]
            db = (await client.get("/api/v1/health/db")).json()["checks"]
    finally:
        await engine.dispose()
    assert second["database"]["checked_at"] == first["database"]["checked_at"]
    assert second["started"]["checked_at"] >= first["started"]["checked_at"]
    assert db["database"]["checked_at"] > first["database"]["checked_at"]  # /health/db is not cached


@pytest.mark.anyio
async def test_ietf_format_validates(tmp_path: Path) -> None:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    health, engine = _sqlite_health(tmp_path, lifecycle)
    try:
        async with serve(health, lifecycle) as client:
            ready = await client.get("/readyz", headers={"Accept": "application/health+json"})
            db = await client.get("/api/v1/health/db", headers={"Accept": "application/health+json"})
            lifecycle.begin_drain()
            failing = await client.get("/readyz", headers={"Accept": "application/health+json, */*"})
    finally:
        await engine.dispose()
    for response, code, status in ((ready, 200, "pass"), (db, 200, "pass"), (failing, 503, "fail")):
        assert response.status_code == code
        assert response.headers["content-type"].startswith("application/health+json")
        body = json.loads(response.text)
        validate_ietf(body)
        assert body["status"] == status
    assert set(json.loads(ready.text)["checks"]) == {
        "started:responseTime",
        "draining:responseTime",
        "database:responseTime",
    }
    assert json.loads(failing.text)["checks"]["draining:responseTime"][0]["output"] == "draining"


@pytest.mark.anyio
async def test_database_endpoint_without_engine_is_not_configured() -> None:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    health = build_health(make_settings(), None, lifecycle, None)
    async with serve(health, lifecycle) as client:
        response = await client.get("/api/v1/health/db")
        external = await client.get("/api/v1/health/external")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["error"] == "not_configured"
    assert external.status_code == 503
    assert {c["error"] for c in external.json()["checks"].values()} == {"not_configured"}


@pytest.mark.anyio
async def test_exception_text_never_reaches_the_body() -> None:
    async def leaky(metadata: Metadata) -> Outcome:
        raise RuntimeError("password=hunter2 at postgres://u:p@10.0.0.5/db")

    lifecycle = Lifecycle()
    lifecycle.mark_started()
    health = HealthService(lifecycle=lifecycle, database=Check("database", leaky), external=[])
    async with serve(health, lifecycle) as client:
        response = await client.get("/api/v1/health/db")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["error"] == "internal_error"
    for word in ("hunter2", "password", "postgres://", "10.0.", "RuntimeError"):
        assert word not in response.text
