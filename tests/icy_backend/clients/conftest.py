"""Fixtures for the client tests: fresh metrics and breakers, simulators, loopback servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest
from anyio.abc import SocketStream

from icy_backend.breakers import Breakers
from icy_backend.metrics import Metrics, make_registry
from icy_backend.settings import Settings


def make_breakers(metrics: Metrics, threshold: int = 3, ttl: float = 0.2) -> Breakers:
    overrides: dict[str, float] = {}
    for svc in ("BLOCKSTREAM_API", "BASE_RPC", "COINGECKO", "MOCHI_PAY"):
        overrides[f"CB_{svc}_THRESHOLD"] = threshold
        overrides[f"CB_{svc}_TTL_SECONDS"] = ttl
    return Breakers(Settings(**overrides), metrics)  # type: ignore[arg-type]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(make_registry())


@pytest.fixture
def breakers(metrics: Metrics) -> Breakers:
    return make_breakers(metrics)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def calls(metrics: Metrics, api: str, status: str) -> float:
    return sample(metrics, "icy_backend_external_api_calls_total", api_name=api, status=status)


def timeouts(metrics: Metrics, api: str, kind: str) -> float:
    return sample(metrics, "icy_backend_external_api_timeouts_total", api_name=api, timeout_type=kind)


def duration_count(metrics: Metrics, api: str, op: str, status: str) -> float:
    return sample(metrics, "icy_backend_external_api_duration_seconds_count", api_name=api, endpoint=op, status=status)


@dataclass
class HangingServer:
    """Accepts TCP connections and never answers; records connections and their disconnects."""

    port: int = 0
    connections: int = 0
    disconnects: int = 0
    open_handlers: int = 0
    events: list[str] = field(default_factory=list)

    async def handle(self, stream: SocketStream) -> None:
        self.connections += 1
        self.open_handlers += 1
        try:
            async with stream:
                while True:
                    await stream.receive()  # the request bytes, then EOF when the client gives up
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            self.disconnects += 1
        finally:
            self.open_handlers -= 1


@pytest.fixture
async def hanging_server() -> AsyncIterator[HangingServer]:
    server = HangingServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()
    await listener.aclose()
