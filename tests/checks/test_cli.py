"""``icy-backend check``: one run of every check, a table, an exit code; no URL or secret printed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from checks.cli import ask_readyz, run_checks_once
from icy_backend.sim.combined import Simulators
from icy_backend.sim.faults import Fault
from tests.checks.conftest import HOST_TOKEN, PASS_TOKEN, PATH_TOKEN, USER_TOKEN, make_settings
from tests.conftest import free_closed_port
from tests.e2e.server import serve
from tests.e2e.stack import silent_listener


def _assert_clean(text: str) -> None:
    for token in (HOST_TOKEN, PASS_TOKEN, PATH_TOKEN, USER_TOKEN, "127.0.0.1", "://", "sqlite3"):
        assert token not in text


@pytest.mark.anyio
async def test_healthy_against_the_simulators(tmp_path: Path) -> None:
    sims = Simulators(chain_id=84532)
    settings = make_settings(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}")
    out = io.StringIO()
    code = await run_checks_once(settings, out, transport=httpx.ASGITransport(app=sims.app), sim_base_url="http://sims")
    text = out.getvalue()
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "LATENCY", "ERROR"]
    names = [line.split()[0] for line in lines[1:-1]]
    assert names == ["database", "blockstream_api", "base_rpc", "coingecko", "mochi_pay"]
    assert lines[-1] == "overall: healthy"
    _assert_clean(text)


@pytest.mark.anyio
async def test_only_optional_upstreams_down_is_degraded_and_exits_0(tmp_path: Path) -> None:
    # Docker reads any non-zero exit as unhealthy: a degraded optional upstream must not mark the container so.
    sims = Simulators(chain_id=84532)
    sims.prices.faults.set(Fault(path="*", status=500))
    sims.mochi.faults.set(Fault(path="*", status=500))
    settings = make_settings(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}", MOCHI_PAY_API_URL="http://sims/mochi"
    )
    out = io.StringIO()
    code = await run_checks_once(settings, out, transport=httpx.ASGITransport(app=sims.app), sim_base_url="http://sims")
    text = out.getvalue()
    assert code == 0, text
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines()[1:-1]}
    assert rows["coingecko"] == rows["mochi_pay"] == "unhealthy"
    assert rows["blockstream_api"] == rows["base_rpc"] == "healthy"
    assert text.splitlines()[-1] == "overall: degraded"


@pytest.mark.anyio
async def test_esplora_down_is_unhealthy_and_exits_1(tmp_path: Path) -> None:
    sims = Simulators(chain_id=84532)
    sims.esplora.faults.set(Fault(path="*", status=503))
    settings = make_settings(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}")
    out = io.StringIO()
    code = await run_checks_once(settings, out, transport=httpx.ASGITransport(app=sims.app), sim_base_url="http://sims")
    text = out.getvalue()
    assert code == 1, text
    assert text.splitlines()[-1] == "overall: unhealthy"
    assert any(line.split()[:2] == ["blockstream_api", "unhealthy"] for line in text.splitlines())


@pytest.mark.anyio
async def test_unhealthy_with_unreachable_upstreams_prints_no_urls() -> None:
    port = free_closed_port()
    url = f"http://{USER_TOKEN}:{PASS_TOKEN}@127.0.0.1:{port}/{PATH_TOKEN}"
    settings = make_settings(
        DATABASE_URL=f"postgresql+asyncpg://postgres:{PASS_TOKEN}@127.0.0.1:{port}/{HOST_TOKEN}",
        BTC_BLOCKSTREAM_API_URL=url,
        BLOCKCHAIN_BASE_RPC_ENDPOINT=url,
        COINGECKO_API_URL=url,
    )
    out = io.StringIO()
    code = await run_checks_once(settings, out)
    text = out.getvalue()
    assert code == 1, text
    assert "connection_refused" in text
    assert text.splitlines()[-1] == "overall: unhealthy"
    _assert_clean(text)


# ---- `check --url`: ask a running server's /readyz (a container HEALTHCHECK) ------------------------------------


def _readyz_app(status: int, hang: bool = False) -> Starlette:
    async def readyz(request: Request) -> Response:
        if hang:
            await anyio.sleep(30)
        return PlainTextResponse("ok" if status == 200 else "not ready", status_code=status)

    return Starlette(routes=[Route("/readyz", readyz)])


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1), (500, 1), (404, 1)])
async def test_url_exit_code_follows_readyz(status: int, code: int) -> None:
    out = io.StringIO()
    transport = httpx.ASGITransport(app=_readyz_app(status))
    assert await ask_readyz("http://svc:8080/", 2.0, out, transport=transport) == code
    assert out.getvalue() == f"readyz: {status}\n"


@pytest.mark.anyio
async def test_url_timeout_is_bounded_and_unhealthy() -> None:
    out = io.StringIO()
    started = time.monotonic()
    transport = httpx.ASGITransport(app=_readyz_app(200, hang=True))
    assert await ask_readyz("http://svc:8080", 0.3, out, transport=transport) == 1
    assert time.monotonic() - started < 2.0
    assert out.getvalue() == "readyz: timeout\n"


@pytest.mark.anyio
async def test_url_refused_connection_is_unhealthy() -> None:
    out = io.StringIO()
    assert await ask_readyz(f"http://127.0.0.1:{free_closed_port()}", 2.0, out) == 1
    assert out.getvalue() == "readyz: connection_refused\n"


def _check_url(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # No settings at all in the environment: `check --url` needs none (a HEALTHCHECK runs in any container).
    return subprocess.run(
        [sys.executable, "-m", "icy_backend.cli", "check", "--url", url, *extra],
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), "APP_ENV": "prod"},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_url_against_a_running_server_then_a_stopped_one(tmp_path: Path) -> None:
    with serve(tmp_path, ready_path="/readyz") as server:
        done = _check_url(server.base_url)
        assert (done.returncode, done.stdout) == (0, "readyz: 200\n"), done.stderr
    done = _check_url(server.base_url)
    assert (done.returncode, done.stdout) == (1, "readyz: connection_refused\n")


def test_url_against_a_silent_server_gives_up_within_the_timeout() -> None:
    with silent_listener() as port:
        started = time.monotonic()
        done = _check_url(f"http://127.0.0.1:{port}", "--timeout", "1")
        assert (done.returncode, done.stdout) == (1, "readyz: timeout\n"), done.stderr
        assert time.monotonic() - started < 15  # interpreter start-up plus the 1 s budget
