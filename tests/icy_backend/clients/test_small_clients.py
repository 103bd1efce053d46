"""PriceClient, MochiPayClient, WebhookClient and open_clients, against small local apps."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import InvalidResponse, UpstreamHTTPStatus
from icy_backend.clients.factory import open_clients
from icy_backend.clients.mochi import MochiPayClient
from icy_backend.clients.prices import PriceClient
from icy_backend.clients.webhook import WebhookClient
from icy_backend.metrics import Metrics
from icy_backend.settings import Settings
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.evm import EvmSim
from tests.icy_backend.clients.conftest import calls

pytestmark = pytest.mark.anyio


class Upstreams:
    """A CoinGecko + Mochi Pay + webhook stand-in that counts requests and can misbehave."""

    def __init__(self) -> None:
        self.price: Any = 65_432.1
        self.price_requests = 0
        self.price_delay = 0.0
        self.circulated: Any = {"data": {"icy": {"value": "123456789000000000000000", "decimal": 18}}}
        self.webhook_status = 200
        self.webhook_hang = False
        self.app = Starlette(
            routes=[
                Route("/simple/price", self.simple_price),
                Route("/api/v1/console-tokens/icy/circulated", self.mochi),
                Route("/hook/{token:path}", self.hook),
            ]
        )

    async def simple_price(self, request: Request) -> Response:
        assert request.query_params["ids"] == "bitcoin"
        assert request.query_params["vs_currencies"] == "usd"
        self.price_requests += 1
        if self.price_delay:
            await anyio.sleep(self.price_delay)
        return JSONResponse({"bitcoin": {"usd": self.price}})

    async def mochi(self, request: Request) -> Response:
        return JSONResponse(self.circulated)

    async def hook(self, request: Request) -> Response:
        if self.webhook_hang:
            await anyio.sleep(60)
        return PlainTextResponse("ok", status_code=self.webhook_status)


@pytest.fixture
def upstreams() -> Upstreams:
    return Upstreams()


@pytest.fixture
async def http(upstreams: Upstreams) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=upstreams.app)) as client:
        yield client


async def test_btc_usd_parses_exactly_and_caches(
    upstreams: Upstreams, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics
) -> None:
    prices = PriceClient(http, "http://cg", breakers, metrics)
    assert await prices.btc_usd() == Decimal("65432.1")
    upstreams.price = 1
    assert await prices.btc_usd() == Decimal("65432.1")  # cached
    assert upstreams.price_requests == 1
    assert calls(metrics, "coingecko", "success") == 1
    # The documented cache_type="btc_price" is really emitted: one miss (the fetch), one hit.
    for operation in ("hit", "miss"):
        labels = {"cache_type": "btc_price", "operation": operation}
        assert metrics.registry.get_sample_value("icy_backend_cache_operations_total", labels) == 1


async def test_btc_usd_single_flight(
    upstreams: Upstreams, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics
) -> None:
    upstreams.price_delay = 0.1
    prices = PriceClient(http, "http://cg", breakers, metrics)
    results: list[Decimal] = []

    async def one() -> None:
        results.append(await prices.btc_usd())

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert results == [Decimal("65432.1")] * 10
    assert upstreams.price_requests == 1


async def test_btc_usd_cache_expires(
    upstreams: Upstreams, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics
) -> None:
    prices = PriceClient(http, "http://cg", breakers, metrics, cache_seconds=0.05)
    await prices.btc_usd()
    await anyio.sleep(0.06)
    upstreams.price = 70_000
    assert await prices.btc_usd() == Decimal("70000")


@pytest.mark.parametrize("bad", [0, -5, "abc", None, True, {"x": 1}])
async def test_btc_usd_rejects_bad_prices(
    bad: Any, upstreams: Upstreams, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics
) -> None:
    upstreams.price = bad
    prices = PriceClient(http, "http://cg", breakers, metrics)
    with pytest.raises(InvalidResponse):
        await prices.btc_usd()


async def test_price_probe_skips_cache_breaker_and_metrics(
    upstreams: Upstreams, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics
) -> None:
    prices = PriceClient(http, "http://cg", breakers, metrics)
    assert await prices.probe() == Decimal("65432.1")
    assert await prices.probe() == Decimal("65432.1")
    assert upstreams.price_requests == 2
    assert calls(metrics, "coingecko", "success") == 0


async def test_circulated_icy(
    upstreams: Upstreams, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics
) -> None:
    mochi = MochiPayClient(http, "http://mochi", breakers, metrics)
    assert await mochi.circulated_icy() == 123456789 * 10**15
    assert await mochi.probe() == 123456789 * 10**15
    assert calls(metrics, "mochi_pay", "success") == 1
    bad: object
    for bad in (
        {"data": {"icy": {"value": "1.5", "decimal": 18}}},
        {"data": {}},
        [],
        {"data": {"icy": {"value": "1", "decimal": 6}}},
    ):
        upstreams.circulated = bad
        with pytest.raises(InvalidResponse):
            await mochi.probe()


async def test_webhook_ping(
    upstreams: Upstreams, http: httpx.AsyncClient, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = WebhookClient(http, metrics, deadline=0.2)
    url = "http://hooks.example/hook/s3cr3t-token?x=1"
    assert await hook.ping(url) is True
    upstreams.webhook_status = 500
    assert await hook.ping(url) is False
    upstreams.webhook_hang = True
    assert await hook.ping(url) is False
    assert await hook.ping("not a url at all") is False
    text = caplog.text
    assert "s3cr3t" not in text
    assert "hooks.example" not in text
    assert "uptime webhook failed: http_5xx" in text
    assert "uptime webhook failed: timeout" in text
    # External-API metrics: every ping counted, by outcome; durations by ping kind.
    assert calls(metrics, "uptime_webhook", "success") == 1
    assert calls(metrics, "uptime_webhook", "error") == 2  # the 500 and the invalid URL
    assert calls(metrics, "uptime_webhook", "timeout") == 1
    timeouts = {"api_name": "uptime_webhook", "timeout_type": "deadline"}
    assert metrics.registry.get_sample_value("icy_backend_external_api_timeouts_total", timeouts) == 1
    upstreams.webhook_hang = False
    upstreams.webhook_status = 200
    assert await hook.ping(url.replace("?", "/fail?"), "fail") is True
    duration = "icy_backend_external_api_duration_seconds_count"
    for endpoint, status, n in (("success", "success", 1), ("fail", "success", 1), ("success", "timeout", 1)):
        labels = {"api_name": "uptime_webhook", "endpoint": endpoint, "status": status}
        assert metrics.registry.get_sample_value(duration, labels) == n, labels


async def test_webhook_refused_is_reported_not_raised(metrics: Metrics, closed_port: int) -> None:
    async with httpx.AsyncClient() as real:
        assert await WebhookClient(real, metrics).ping(f"http://127.0.0.1:{closed_port}/ping") is False


# ---- open_clients ---------------------------------------------------------------------------------------


class Prefixes:
    """Minimal prefix dispatch like the combined simulator app (``POST /evm`` reaches the RPC app)."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = apps

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        for prefix, app in self.apps.items():
            if scope["path"] == prefix or scope["path"].startswith(prefix + "/"):
                path = scope["path"][len(prefix) :] or "/"
                await app(dict(scope, path=path, raw_path=path.encode()), receive, send)
                return
        raise AssertionError(scope["path"])


async def test_open_clients_in_sandbox_mode(upstreams: Upstreams, metrics: Metrics, breakers: Breakers) -> None:
    esplora, evm = EsploraSim(), EvmSim(chain_id=84532)
    app = Prefixes({"/esplora": esplora.app, "/evm": evm.app, "/coingecko": upstreams.app, "/mochi": upstreams.app})
    settings = Settings(APP_ENV="test")
    async with open_clients(
        settings, metrics, breakers, transport=httpx.ASGITransport(app=app), sim_base_url="http://sandbox"
    ) as clients:
        assert await clients.esplora.tip_height() == esplora.height
        assert await clients.evm.chain_id() == 84532
        assert await clients.prices.btc_usd() == Decimal("65432.1")
        assert clients.mochi is not None
        assert await clients.mochi.circulated_icy() > 0
        http = clients.esplora.upstream.http
    assert http.is_closed


async def test_open_clients_from_settings(metrics: Metrics, breakers: Breakers) -> None:
    settings = Settings(
        APP_ENV="test",
        BTC_BLOCKSTREAM_API_URL="https://esplora.invalid/api",
        BLOCKCHAIN_BASE_RPC_ENDPOINTS="https://rpc1.invalid,https://rpc2.invalid",
    )
    async with open_clients(settings, metrics, breakers) as clients:
        assert clients.mochi is None  # not configured
        assert clients.esplora.upstream.endpoints.urls == ["https://esplora.invalid/api"]
        assert clients.evm.upstream.endpoints.urls == ["https://rpc1.invalid", "https://rpc2.invalid"]
        timeout = clients.evm.upstream.http.timeout
        assert timeout.connect is not None
        assert timeout.read is not None
        assert timeout.read < clients.evm.upstream.deadline
        https = {clients.esplora.upstream.http, clients.evm.upstream.http, clients.prices.upstream.http}
        assert len(https) == 3  # one pool per upstream
    assert all(h.is_closed for h in https)


async def test_status_error_from_mochi_counts_as_error(
    upstreams: Upstreams, http: httpx.AsyncClient, breakers: Breakers, metrics: Metrics
) -> None:
    mochi = MochiPayClient(http, "http://mochi/missing", breakers, metrics)
    with pytest.raises(UpstreamHTTPStatus):
        await mochi.circulated_icy()
    assert calls(metrics, "mochi_pay", "error") == 1
