"""``icy-backend check``: one run of every check, a table, an exit code; no URL or secret printed."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import httpx
import pytest

from checks.cli import run_checks_once
from icy_backend.sim.combined import Simulators
from icy_backend.sim.faults import Fault
from tests.checks.conftest import HOST_TOKEN, PASS_TOKEN, PATH_TOKEN, USER_TOKEN, make_settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


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
async def test_degraded_when_a_non_critical_upstream_fails(tmp_path: Path) -> None:
    sims = Simulators(chain_id=84532)
    sims.prices.faults.set(Fault(path="*", status=500))
    settings = make_settings(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}")
    out = io.StringIO()
    code = await run_checks_once(settings, out, transport=httpx.ASGITransport(app=sims.app), sim_base_url="http://sims")
    assert code == 1, out.getvalue()
    assert "http_5xx" in out.getvalue()


@pytest.mark.anyio
async def test_unhealthy_with_unreachable_upstreams_prints_no_urls() -> None:
    port = _closed_port()
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
    assert code == 2, text
    assert "connection_refused" in text
    assert text.splitlines()[-1] == "overall: unhealthy"
    _assert_clean(text)
