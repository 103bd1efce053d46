"""A pooled keep-alive connection the server dropped must not make a health probe report the upstream down.

Found by the e2e fault matrix: one probe hit a connection the server had just closed and reported
``connection_error``, which for Esplora or Base RPC turns /api/v1/health/external 503 for the cache TTL.
"""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from icy_backend.clients.esplora import EsploraClient
from icy_backend.metrics import Metrics
from tests.icy_backend.clients.conftest import make_breakers

pytestmark = pytest.mark.anyio

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n812"


async def test_probe_retries_once_on_a_dropped_keep_alive_connection(metrics: Metrics) -> None:
    connections = 0

    async def handle(stream: SocketStream) -> None:
        # Answers the first request of each connection, then reads the next one and closes without answering:
        # exactly what a client sees when the server's idle timeout fires as it reuses the connection.
        nonlocal connections
        connections += 1
        async with stream:
            await stream.receive()
            await stream.send(ANSWER)
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg, httpx.AsyncClient() as http:
        tg.start_soon(listener.serve, handle)
        esplora = EsploraClient(http, [f"http://127.0.0.1:{port}"], make_breakers(metrics), metrics)
        with anyio.fail_after(5):
            assert await esplora.probe() == 812
            assert await esplora.probe() == 812  # the reused connection is dropped; one fresh attempt answers
        assert connections == 2
        tg.cancel_scope.cancel()
