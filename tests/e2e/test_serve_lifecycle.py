"""The real server: HTTP/1.1 and h2c on one port; SIGTERM drains in-flight requests, flips /readyz, exits 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.e2e.server import serve

pytestmark = pytest.mark.anyio


async def test_http1_and_h2c_prior_knowledge(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as h1:
            r = await h1.get("/healthz")
            assert r.http_version == "HTTP/1.1"
            assert r.json() == {"message": "ok"}
        async with httpx.AsyncClient(base_url=server.base_url, http1=False, http2=True) as h2:
            r = await h2.get("/healthz")
            assert r.http_version == "HTTP/2"
            assert r.json() == {"message": "ok"}
            r = await h2.get("/readyz")
            assert r.status_code == 200


async def test_sigterm_drains_in_flight_request_and_exits_zero(tmp_path: Path) -> None:
    env = {"SHUTDOWN_DRAIN_DELAY_SECONDS": "1.5"}
    with serve(tmp_path, env, ready_path="/readyz") as server:
        slow_status: list[int] = []
        readyz_after_term: list[int] = []
        sent_term = anyio.Event()

        async def slow_upload() -> None:
            # An in-flight request: the body arrives slowly, across the SIGTERM.
            async def body():  # type: ignore[no-untyped-def]
                yield b'{"icy_amount": "1000000000000000000",'
                await sent_term.wait()
                await anyio.sleep(0.8)
                yield b' "btc_address": "not-an-address", "btc_amount": "5000"}'

            async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as client:
                r = await client.post("/api/v1/swap/generate-signature", content=body())
                slow_status.append(r.status_code)

        async def terminate_then_probe() -> None:
            await anyio.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            sent_term.set()
            await anyio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=2) as client:
                readyz_after_term.append((await client.get("/readyz")).status_code)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_upload)
                tg.start_soon(terminate_then_probe)

        started = time.monotonic()
        while server.process.poll() is None and time.monotonic() - started < 30:
            await anyio.sleep(0.1)
        assert server.process.returncode == 0, server.log()
        assert readyz_after_term == [503]
        # The in-flight request got a real answer (its body is invalid, so a 400 envelope), not a reset.
        assert slow_status == [400]
        log = server.log()
        assert "received SIGTERM" in log
        assert "Traceback" not in log
