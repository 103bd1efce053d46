"""Fault injection: latency, hang, status, malformed, reset, hang_after, control routes, method faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.faults import Fault

pytestmark = pytest.mark.anyio

WALLET = P2wpkhKey.from_seed(b"fault wallet")


@pytest.fixture
def sim() -> EsploraSim:
    return EsploraSim()


@pytest.fixture
async def client(sim: EsploraSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as c:
        yield c


async def test_latency(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    sim.faults.set(Fault(path="/blocks", latency_ms=200))
    start = time.monotonic()
    assert (await client.get("/blocks/tip/height")).status_code == 200
    assert time.monotonic() - start >= 0.19
    start = time.monotonic()
    assert (await client.get("/fee-estimates")).status_code == 200
    assert time.monotonic() - start < 0.19


async def test_hang(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    sim.faults.set(Fault(path="*", hang=True))
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.3):
            await client.get("/blocks/tip/height")


async def test_status_429_with_retry_after_and_500(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    sim.faults.set(Fault(path="/address", status=429, retry_after=7))
    sim.faults.set(Fault(path="/fee-estimates", status=500))
    r = await client.get(f"/address/{WALLET.address}/txs")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert (await client.get("/fee-estimates")).status_code == 500
    assert (await client.get("/blocks/tip/height")).status_code == 200


async def test_malformed(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    sim.faults.set(Fault(path="/fee-estimates", malformed=True))
    r = await client.get("/fee-estimates")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


async def test_reset_is_a_transport_error(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    sim.faults.set(Fault(path="*", reset=True))
    with pytest.raises(httpx.TransportError):
        await client.get("/blocks/tip/height")


async def test_hang_after_applies_the_effect(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    txid, vout = sim.fund(WALLET.address, 50_000)
    raw = WALLET.sign_spend([(txid, vout, 50_000)], [(WALLET.address, 40_000)])
    sim.faults.set(Fault(path="/tx", hang_after=True))
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.3):
            await client.post("/tx", content=raw)
    assert len(sim.accepted) == 1  # the node took it (change only: no payment)
    assert sim.tx_known(sim.accepted[0])


async def test_control_routes(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    r = await client.put("/_sim/faults", json={"path": "/fee-estimates", "status": 503})
    assert r.status_code == 200
    listed = (await client.get("/_sim/faults")).json()["faults"]
    assert listed == [
        {
            "path": "/fee-estimates",
            "latency_ms": 0,
            "hang": False,
            "hang_after": False,
            "status": 503,
            "retry_after": None,
            "malformed": False,
            "reset": False,
        }
    ]
    assert (await client.get("/fee-estimates")).status_code == 503
    # A catch-all fault never hits the control routes themselves.
    await client.put("/_sim/faults", json={"path": "*", "hang": True})
    assert len((await client.get("/_sim/faults")).json()["faults"]) == 2
    assert (await client.delete("/_sim/faults")).status_code == 200
    assert (await client.get("/fee-estimates")).status_code == 200
    assert sim.faults.all() == []
    bad = await client.put("/_sim/faults", json={"path": "*", "bogus": 1})
    assert bad.status_code == 400
