"""Build every outbound client, one ``httpx.AsyncClient`` per upstream, and close them all on exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx

from icy_backend import __version__
from icy_backend.breakers import Breakers
from icy_backend.clients.esplora import EsploraClient
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.clients.mochi import MochiPayClient
from icy_backend.clients.prices import PriceClient
from icy_backend.clients.webhook import WebhookClient
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings

CALL_DEADLINE = 10.0
# Mochi Pay is an optional addend of circulated ICY (a failure counts as 0 with a warning): a hanging Mochi Pay
# must not hold every oracle computation for the full call deadline.
MOCHI_DEADLINE = 3.0
# Read below the call deadline so a hanging endpoint leaves time to fail over to the next one.
TIMEOUT = httpx.Timeout(connect=3.0, read=4.0, write=4.0, pool=3.0)
LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30.0)
HEADERS = {"user-agent": f"icy-backend/{__version__}"}


@dataclass
class Clients:
    esplora: EsploraClient
    evm: EvmRpcClient
    prices: PriceClient
    mochi: MochiPayClient | None
    webhook: WebhookClient


@asynccontextmanager
async def open_clients(
    settings: Settings,
    metrics: Metrics,
    breakers: Breakers,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sim_base_url: str | None = None,
) -> AsyncIterator[Clients]:
    """Open the clients; with ``transport`` (sandbox mode) every client talks to the simulators under
    ``sim_base_url`` (``/esplora``, ``/evm``, ``/coingecko``, ``/mochi``)."""
    if transport is not None:
        base = (sim_base_url or "http://sandbox").rstrip("/")
        # Replicas the settings list under the simulators' base (``/esplora2``, ``/evm2``) are kept, primary first.
        btc = [u for u in settings.btc_endpoints if u.startswith(base + "/")] or [f"{base}/esplora"]
        rpc = [u for u in settings.base_rpc_endpoints if u.startswith(base + "/")] or [f"{base}/evm"]
        coingecko = f"{base}/coingecko"
        mochi_url: str | None = f"{base}/mochi"
    else:
        btc = settings.btc_endpoints
        rpc = settings.base_rpc_endpoints
        coingecko = settings.COINGECKO_API_URL.rstrip("/")
        mochi_url = settings.MOCHI_PAY_API_URL.rstrip("/") if settings.MOCHI_PAY_API_URL else None

    async with AsyncExitStack() as stack:

        async def client(http2: bool = True, follow_redirects: bool = False) -> httpx.AsyncClient:
            return await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=transport,
                    timeout=TIMEOUT,
                    limits=LIMITS,
                    headers=HEADERS,
                    http2=http2 and transport is None,
                    follow_redirects=follow_redirects,
                )
            )

        mochi = None
        if mochi_url:
            mochi = MochiPayClient(await client(), mochi_url, breakers, metrics, deadline=MOCHI_DEADLINE)
        yield Clients(
            esplora=EsploraClient(await client(), btc, breakers, metrics, deadline=CALL_DEADLINE),
            evm=EvmRpcClient(await client(), rpc, breakers, metrics, deadline=CALL_DEADLINE),
            prices=PriceClient(await client(), coingecko, breakers, metrics, deadline=CALL_DEADLINE),
            mochi=mochi,
            # Webhook hosts are arbitrary; plain HTTP/1.1 and redirects followed (uptime services redirect).
            webhook=WebhookClient(await client(http2=False, follow_redirects=True), metrics),
        )
