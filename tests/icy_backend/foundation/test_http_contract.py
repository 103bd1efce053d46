"""The HTTP contract of SPEC §4: envelope on errors, 404/405/413/400/500, CORS, and the prod API-key matrix."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.routing import Route

from icy_backend.app import create_app
from icy_backend.http.body import read_json
from icy_backend.http.responses import envelope
from icy_backend.middleware.auth import is_open
from icy_backend.settings import load_settings
from icy_backend.sim.combined import Simulators
from tests.asgi import client_for
from tests.icy_backend.foundation.test_settings import PROD_ENV

pytestmark = pytest.mark.anyio


def _settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    base = {"APP_ENV": "test", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.sqlite3"}
    return load_settings({**base, **env}, env_file=None)


def _app(settings):  # type: ignore[no-untyped-def]
    # Outbound clients talk to the in-process simulators (never a real host); no job runs: these tests are HTTP.
    return create_app(settings, transport=httpx.ASGITransport(app=Simulators().app), run_jobs=False)


async def test_liveness_and_unknown_route(tmp_path: Path) -> None:
    async with client_for(_app(_settings(tmp_path))) as client:
        r = await client.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"message": "ok"}
        assert (await client.get("/livez")).json() == {"message": "ok"}
        r = await client.get("/no/such/route")
        assert r.status_code == 404
        assert r.json() == {"data": None, "error": "Not found"}


async def test_wrong_method_is_405_with_envelope(tmp_path: Path) -> None:
    async with client_for(_app(_settings(tmp_path))) as client:
        r = await client.post("/healthz")
        assert r.status_code == 405
        assert r.json()["error"] == "Method not allowed"


def _app_with_test_routes(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    from pydantic import BaseModel

    class Body(BaseModel):
        icy_amount: str
        count: int

    async def echo(request: Request):  # type: ignore[no-untyped-def]
        body = await read_json(request, Body)
        return envelope({"icy_amount": body.icy_amount, "count": body.count})

    async def boom(request: Request):  # type: ignore[no-untyped-def]
        raise RuntimeError("SELECT * FROM secrets WHERE host='db.internal' -- stack detail")

    app = _app(_settings(tmp_path, **env))
    app.router.routes.extend([Route("/t/echo", echo, methods=["POST"]), Route("/t/boom", boom)])
    return app


async def test_malformed_json_and_wrong_types_are_400_with_errors(tmp_path: Path) -> None:
    async with client_for(_app_with_test_routes(tmp_path)) as client:
        r = await client.post("/t/echo", content=b"{not json")
        assert r.status_code == 400
        assert r.json()["errors"] == [{"field": "body", "msg": "malformed JSON"}]
        r = await client.post("/t/echo", json={"icy_amount": "1", "count": "many"})
        assert r.status_code == 400
        assert [e["field"] for e in r.json()["errors"]] == ["count"]
        r = await client.post("/t/echo", json={"icy_amount": "1", "count": 2})
        assert r.status_code == 200
        assert r.json() == {"data": {"icy_amount": "1", "count": 2}}


async def test_unhandled_error_is_500_without_details(tmp_path: Path) -> None:
    async with client_for(_app_with_test_routes(tmp_path)) as client:
        r = await client.get("/t/boom")
        assert r.status_code == 500
        assert r.json() == {"data": None, "error": "Internal server error"}
        assert "SELECT" not in r.text and "db.internal" not in r.text


async def test_body_over_64_kib_is_413(tmp_path: Path) -> None:
    async with client_for(_app_with_test_routes(tmp_path)) as client:
        big = b'{"icy_amount": "' + b"1" * (64 * 1024) + b'", "count": 1}'
        r = await client.post("/t/echo", content=big)
        assert r.status_code == 413
        assert r.json()["error"] == "Request body too large"

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(70):
                yield b"x" * 1024

        r = await client.post("/t/echo", content=chunks())  # chunked: no Content-Length
        assert r.status_code == 413
        ok = b'{"icy_amount": "' + b"1" * (60 * 1024) + b'", "count": 1}'
        assert (await client.post("/t/echo", content=ok)).status_code == 200


async def test_cors_allowed_origins(tmp_path: Path) -> None:
    app = _app(_settings(tmp_path, APP_ENV="dev", ALLOWED_ORIGINS="https://swap.example"))
    async with client_for(app) as client:
        r = await client.get("/healthz", headers={"Origin": "https://swap.example"})
        assert r.headers["access-control-allow-origin"] == "https://swap.example"
        r = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_empty_allowed_origins_does_not_break_requests(tmp_path: Path) -> None:
    # fix: the old service 500'd every request when ALLOWED_ORIGINS was empty
    app = _app(_settings(tmp_path, APP_ENV="dev", ALLOWED_ORIGINS=""))
    async with client_for(app) as client:
        r = await client.get("/healthz", headers={"Origin": "https://swap.example"})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers


OPEN = [
    ("GET", "/healthz"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/api/v1/health/db"),
    ("GET", "/api/v1/health/external"),
    ("GET", "/api/v1/health/jobs"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/api/v1/swap/info"),
    ("GET", "/api/v1/transactions"),
    ("POST", "/api/v1/swap/generate-signature"),
]
PROTECTED = [
    ("GET", "/api/v1/oracle/circulated-icy"),
    ("GET", "/api/v1/oracle/treasury-btc"),
    ("GET", "/api/v1/oracle/icy-btc-ratio"),
    ("GET", "/api/v1/oracle/icy-btc-ratio-cached"),
    ("POST", "/api/v1/swap"),
    ("GET", "/api/v1/unknown"),
]


@pytest.mark.parametrize(("method", "path"), OPEN)
def test_open_paths(method: str, path: str) -> None:
    assert is_open(method, path)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_paths(method: str, path: str) -> None:
    assert not is_open(method, path)


async def test_prod_api_key_matrix(tmp_path: Path) -> None:
    key = PROD_ENV["API_KEY"]
    app = _app_with_test_routes(tmp_path, **PROD_ENV)
    async with client_for(app) as client:
        r = await client.get("/healthz")
        assert r.status_code == 200  # open
        r = await client.post("/t/echo", json={"icy_amount": "1", "count": 1})
        assert r.status_code == 401
        assert r.json()["error"] == "Missing API key"
        r = await client.post("/t/echo", json={"icy_amount": "1", "count": 1}, headers={"Authorization": "nope"})
        assert r.status_code == 401
        assert r.json()["error"] == "Invalid API key"
        for header in (key, f"ApiKey {key}", f"apikey {key}"):
            r = await client.post("/t/echo", json={"icy_amount": "1", "count": 1}, headers={"Authorization": header})
            assert r.status_code == 200, header
        assert key not in r.text


async def test_no_auth_outside_prod(tmp_path: Path) -> None:
    app = _app_with_test_routes(tmp_path, APP_ENV="staging", API_KEY="k" * 16)
    async with client_for(app) as client:
        r = await client.post("/t/echo", json={"icy_amount": "1", "count": 1})
        assert r.status_code == 200


async def test_database_outage_is_503_not_500(tmp_path: Path) -> None:
    # A route that does not map a database outage itself still answers a clean 503 (found by the e2e fault
    # matrix: GET /api/v1/transactions used to answer 500 with a traceback in the log while the database was down).
    closed_port = "postgresql+asyncpg://postgres@127.0.0.1:1/none"
    app = _app(_settings(tmp_path, APP_ENV="dev", DATABASE_URL=closed_port, DB_CONNECT_TIMEOUT_SECONDS="0.5"))
    async with client_for(app) as client:
        r = await client.get("/api/v1/transactions")
        assert r.status_code == 503
        assert r.json() == {"data": None, "message": "Database unavailable", "error": "database_unavailable"}


async def test_unmapped_upstream_failure_is_503_with_its_class(tmp_path: Path) -> None:
    from icy_backend.clients.errors import CircuitOpenError

    async def open_breaker(request: Request):  # type: ignore[no-untyped-def]
        raise CircuitOpenError("blockstream_api", retry_after=12.5)

    app = _app(_settings(tmp_path))
    app.router.routes.append(Route("/t/open", open_breaker))
    async with client_for(app) as client:
        r = await client.get("/t/open")
        assert r.status_code == 503
        assert r.json()["error"] == "circuit_open"
        assert r.headers["retry-after"] == "12"
