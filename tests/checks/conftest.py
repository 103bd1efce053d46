"""Fixtures for the health tests: simulators behind real clients, a minimal app with the health routes,
PostgreSQL, and a loopback listener that accepts and never answers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from checks.service import HealthService
from icy_backend.breakers import Breakers
from icy_backend.clients.errors import UpstreamConnectionError
from icy_backend.clients.esplora import EsploraClient
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.clients.factory import Clients
from icy_backend.clients.mochi import MochiPayClient
from icy_backend.clients.prices import PriceClient
from icy_backend.clients.webhook import WebhookClient
from icy_backend.db.engine import make_engine
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from icy_backend.routes.health import routes as health_routes
from icy_backend.settings import BREAKER_SERVICES, Settings
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.evm import EvmSim
from icy_backend.sim.mochi import MochiSim
from icy_backend.sim.prices import PriceSim
from tests.ci import in_ci

# Recognisable tokens put into every configured URL and secret; no response may contain any of them.
HOST_TOKEN = "hosttokzq"
PATH_TOKEN = "pathkeyzq"
USER_TOKEN = "usertokzq"
PASS_TOKEN = "passtokzq"
SECRET_TOKEN = "secrettokzq"
TOKENS = (HOST_TOKEN, PATH_TOKEN, USER_TOKEN, PASS_TOKEN, SECRET_TOKEN, "127.0.0.1", "localhost", "http://")

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
CHAIN_ID = 84532


def make_settings(**overrides: Any) -> Settings:
    env: dict[str, Any] = {"APP_ENV": "test", "BLOCKCHAIN_CHAIN_ID": CHAIN_ID, "API_KEY": SECRET_TOKEN}
    env.update(overrides)
    return Settings(**env)


def make_breakers(metrics: Metrics, *, threshold: int = 1, ttl: float = 60.0) -> Breakers:
    overrides: dict[str, Any] = {}
    for svc in BREAKER_SERVICES:
        overrides[f"CB_{svc.upper()}_THRESHOLD"] = threshold
        overrides[f"CB_{svc.upper()}_TTL_SECONDS"] = ttl
    return Breakers(make_settings(**overrides), metrics)


async def open_breaker(breakers: Breakers, service: str) -> None:
    async def fail() -> None:
        raise UpstreamConnectionError(service, "boom")

    for _ in range(10):
        if breakers.state(service) == "open":
            return
        with contextlib.suppress(Exception):  # the failure itself, then CircuitOpenError
            await breakers.call(service, fail)
    assert breakers.state(service) == "open"


class CountingTransport(httpx.AsyncBaseTransport):
    """An ASGI transport that counts requests, requests in flight, and requests cancelled mid-flight."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.requests = 0
        self.in_flight = 0
        self.cancelled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.in_flight += 1
        try:
            return await self.inner.handle_async_request(request)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


def _mounted(app: Any) -> Any:
    """The configured URL carries a path token (like an RPC provider's ``/v2/<key>``): strip it for the sim."""
    prefix = f"/{PATH_TOKEN}"

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "/")
        if scope["type"] == "http":
            assert path.startswith(prefix), "request without the configured path"
            stripped = path[len(prefix) :] or "/"
            scope = {**scope, "path": stripped, "raw_path": stripped.encode()}
        await app(scope, receive, send)

    return asgi


def _url(name: str) -> str:
    return f"http://{USER_TOKEN}:{PASS_TOKEN}@{name}-{HOST_TOKEN}.example/{PATH_TOKEN}"


@dataclass
class Upstreams:
    """The four simulators, each behind its own counting transport and real client."""

    metrics: Metrics
    breakers: Breakers
    esplora: EsploraSim = field(default_factory=EsploraSim)
    evm: EvmSim = field(default_factory=lambda: EvmSim(chain_id=CHAIN_ID))
    prices: PriceSim = field(default_factory=PriceSim)
    mochi: MochiSim = field(default_factory=MochiSim)
    transports: dict[str, CountingTransport] = field(default_factory=dict)
    clients: Clients | None = None

    @property
    def all_faults(self) -> list[Any]:
        return [self.esplora.faults, self.evm.faults, self.prices.faults, self.mochi.faults]

    def requests(self) -> dict[str, int]:
        return {name: t.requests for name, t in self.transports.items()}


@asynccontextmanager
async def upstreams(
    metrics: Metrics | None = None, breakers: Breakers | None = None, *, with_mochi: bool = True
) -> AsyncIterator[Upstreams]:
    metrics = metrics or Metrics(make_registry())
    ups = Upstreams(metrics=metrics, breakers=breakers or make_breakers(metrics))
    for name, sim in (("esplora", ups.esplora), ("evm", ups.evm), ("prices", ups.prices), ("mochi", ups.mochi)):
        ups.transports[name] = CountingTransport(_mounted(sim.app))
    b, m = ups.breakers, metrics
    async with (
        httpx.AsyncClient(transport=ups.transports["esplora"]) as h1,
        httpx.AsyncClient(transport=ups.transports["evm"]) as h2,
        httpx.AsyncClient(transport=ups.transports["prices"]) as h3,
        httpx.AsyncClient(transport=ups.transports["mochi"]) as h4,
        httpx.AsyncClient() as h5,
    ):
        ups.clients = Clients(
            esplora=EsploraClient(h1, [_url("btc")], b, m),
            evm=EvmRpcClient(h2, [_url("rpc")], b, m),
            prices=PriceClient(h3, _url("prices"), b, m),
            mochi=MochiPayClient(h4, _url("mochi"), b, m) if with_mochi else None,
            webhook=WebhookClient(h5, m),
        )
        yield ups


@asynccontextmanager
async def serve(health: HealthService, lifecycle: Lifecycle) -> AsyncIterator[httpx.AsyncClient]:
    """A minimal Starlette app with the health routes and a lifespan yielding the state, behind a client.

    httpx's ASGI transport does not run the lifespan, so it is entered here and its state handed to every
    request the way an ASGI server does.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"health": health, "lifecycle": lifecycle}

    app = Starlette(routes=health_routes, lifespan=lifespan)
    async with lifespan(app) as state:

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope = {**scope, "state": dict(state)}
            await app(scope, receive, send)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://test") as client:
            yield client


# The old suite's information-disclosure list (TC-INT), plus our own markers of leaked exception text.
DISCLOSURE_WORDS = (
    "password", "secret", "key", "token", "private", "localhost", "127.0.0.1", "192.168.", "10.0.", "172.16.",
    "database=", "postgres://", "mysql://", "/usr/local/", "panic:",
    "traceback", "exception", "error:", "select 1",
)  # fmt: skip


def assert_redacted(body: str) -> None:
    """No configured URL part or secret, and nothing from the disclosure list, in a health body."""
    lowered = body.lower()
    for token in TOKENS:
        assert token not in lowered, token
    for word in DISCLOSURE_WORDS:
        assert word not in lowered, word


@asynccontextmanager
async def postgres_engine(url: str = PG_URL) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(make_settings(), url)
    try:
        try:
            with anyio.fail_after(3):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            if in_ci():
                raise
            pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
        yield engine
    finally:
        await engine.dispose()


@dataclass
class Listener:
    port: int
    accepted: int = 0
    closed: int = 0


@asynccontextmanager
async def hanging_listener() -> AsyncIterator[Listener]:
    """A loopback TCP listener that accepts, reads whatever comes, and never answers."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    info = Listener(port=listener.extra(SocketAttribute.local_port))

    async def handle(stream: SocketStream) -> None:
        info.accepted += 1
        async with stream:
            try:
                while True:
                    await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                info.closed += 1

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield info
        finally:
            tg.cancel_scope.cancel()
