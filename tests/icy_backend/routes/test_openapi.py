"""``/openapi.json`` is a valid OpenAPI 3.1 document covering every route the app mounts; ``/docs`` lists them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from icy_backend.routes import openapi, oracle, swap, swap_info, transactions
from icy_backend.routes.openapi_doc import openapi_document
from icy_backend.settings import load_settings
from tests.ci import require_module

SPEC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/api/v1/health/db"),
    ("GET", "/api/v1/health/external"),
    ("GET", "/api/v1/health/jobs"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/oracle/circulated-icy"),
    ("GET", "/api/v1/oracle/treasury-btc"),
    ("GET", "/api/v1/oracle/icy-btc-ratio"),
    ("GET", "/api/v1/oracle/icy-btc-ratio-cached"),
    ("GET", "/api/v1/swap/info"),
    ("POST", "/api/v1/swap/generate-signature"),
    ("POST", "/api/v1/swap"),
    ("GET", "/api/v1/transactions"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
}


def _documented() -> set[tuple[str, str]]:
    doc = openapi_document()
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item}


def _mounted(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    out = set()
    for route in routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    out.add((method, route.path))
    return out


def test_document_is_valid_openapi_31() -> None:
    validator = require_module("openapi_spec_validator")
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    validator.validate(doc)


def test_every_spec_route_is_documented() -> None:
    assert _documented() == SPEC_ROUTES


def test_every_route_module_is_documented() -> None:
    mounted = _mounted([*oracle.routes, *swap_info.routes, *transactions.routes, *swap.routes, *openapi.routes])
    assert mounted <= _documented()


def test_every_route_the_app_mounts_is_documented() -> None:
    app_module = pytest.importorskip("icy_backend.app")
    settings = load_settings({"APP_ENV": "test", "SANDBOX": "off"}, env_file=None)
    app: Starlette = app_module.create_app(settings)
    mounted = _mounted(list(app.routes))
    missing = mounted - _documented()
    assert not missing, f"routes without documentation: {sorted(missing)}"


def test_schema_refs_resolve() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                assert ref.startswith("#/components/schemas/")
                assert ref.rsplit("/", 1)[1] in schemas
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


@pytest.mark.anyio
async def test_served_json_and_docs_page() -> None:
    app = Starlette(routes=openapi.routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/openapi.json")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == openapi_document()
        page = await client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for _, path in SPEC_ROUTES:
            assert f"<code>{path}</code>" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # self-contained, no CDN
