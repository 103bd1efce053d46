"""Test support for the domain, oracle, swap-info and transactions tests: a private PostgreSQL database.

Other engineers' tests use the shared ``test`` database concurrently, so each test module here gets its
own database (created from ``test`` over an autocommit connection, migrated once, dropped at the end) and
every test starts with empty tables.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from icy_backend.breakers import Breakers
from icy_backend.clients.factory import Clients, open_clients
from icy_backend.http.responses import ApiError
from icy_backend.metrics import Metrics, make_registry
from icy_backend.settings import Settings, load_settings
from icy_backend.sim.combined import Simulators
from tests import pg
from tests.asgi import WithState


def private_database() -> Iterator[str]:
    """Create, migrate and finally drop a uniquely named database; skip when PostgreSQL is unreachable."""
    yield from pg.private_database("icy_dom")


async def fresh_engine(url: str) -> AsyncEngine:
    """An engine on ``url`` with every table emptied."""
    return await pg.emptied_engine(url, pool_size=5, max_overflow=20)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


def make_app(routes: list[BaseRoute], state: dict[str, Any]) -> WithState:
    """A bare app with the given routes, ``ApiError`` handling and ``request.state`` = ``state``."""
    return WithState(Starlette(routes=routes, exception_handlers={ApiError: _api_error}), state)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class Counter:
    """Counts requests reaching an ASGI app by first path segment (``/evm``, ``/esplora``, ...)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: dict[str, int] = {}

        self.rpc: list[tuple[str, list[Any]]] = []  # every JSON-RPC call (method, params) sent to /evm

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        prefix = "/" + scope["path"].strip("/").split("/")[0]
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        body = bytearray()

        async def recv() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        await self.app(scope, recv, send)
        if prefix == "/evm" and body:
            data = json.loads(body)
            for call in data if isinstance(data, list) else [data]:
                self.rpc.append((call.get("method"), call.get("params") or []))

    def log_ranges(self) -> list[tuple[int, int]]:
        """The ``eth_getLogs`` block ranges requested, in order."""
        return [(int(p[0]["fromBlock"], 16), int(p[0]["toBlock"], 16)) for m, p in self.rpc if m == "eth_getLogs"]

    def reset(self) -> None:
        self.counts.clear()
        self.rpc.clear()


@dataclass
class SimEnv:
    sims: Simulators
    settings: Settings
    metrics: Metrics
    clients: Clients
    counter: Counter


def sim_settings(sims: Simulators, **overrides: str) -> Settings:
    env = {k: v for k, v in sims.env_lines("http://sim").items() if k != "DEMO_LOCKED_TREASURY_ADDRESS"}
    env.update({"APP_ENV": "test", "SANDBOX": "off"})
    env.update(overrides)
    return load_settings(env, env_file=None)


@asynccontextmanager
async def sim_env(sims: Simulators | None = None, **overrides: str) -> AsyncIterator[SimEnv]:
    """Seeded simulators, settings pointing at them, metrics and real clients (ASGI transport)."""
    if sims is None:
        sims = Simulators()
        sims.seed_demo()
    settings = sim_settings(sims, **overrides)
    metrics = Metrics(make_registry())
    counter = Counter(sims.app)
    transport = httpx.ASGITransport(app=counter)
    async with open_clients(
        settings, metrics, Breakers(settings, metrics), transport=transport, sim_base_url="http://sim"
    ) as clients:
        yield SimEnv(sims, settings, metrics, clients, counter)


def metric(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)
