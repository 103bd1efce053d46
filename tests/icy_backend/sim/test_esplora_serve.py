"""``simulate`` serving details for the Bitcoin side: the block ticker's clocks and idle keep-alive connections."""

from __future__ import annotations

import socket

import anyio
import anyio.abc
import httpx
import pytest

from icy_backend.clients.factory import LIMITS
from icy_backend.sim.combined import Simulators
from icy_backend.sim.serve import KEEP_ALIVE_TIMEOUT, run_simulate

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_btc_block_time_zero_leaves_mining_to_the_tests() -> None:
    sims = Simulators()
    btc, evm = sims.esplora.height, len(sims.evm.blocks)
    async with anyio.create_task_group() as tg:
        await tg.start(sims.run_ticker, 0.01, 0)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert len(sims.evm.blocks) > evm + 3  # the EVM chain still ticks
    assert sims.esplora.height == btc


async def test_separate_btc_clock_and_block_time_zero() -> None:
    sims = Simulators()
    btc, evm = sims.esplora.height, len(sims.evm.blocks)
    async with anyio.create_task_group() as tg:
        await tg.start(sims.run_ticker, 0, 0.01)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert sims.esplora.height > btc + 3
    assert len(sims.evm.blocks) == evm
    async with anyio.create_task_group() as tg:
        await tg.start(sims.run_ticker, 0)
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert len(sims.evm.blocks) == evm


async def _get(stream: anyio.abc.SocketStream, path: str) -> bytes:
    """One HTTP/1.1 request on ``stream``; the whole response (head and Content-Length body), b"" if closed."""
    await stream.send(f"GET {path} HTTP/1.1\r\nHost: sim\r\nConnection: keep-alive\r\n\r\n".encode())
    data = b""
    with anyio.fail_after(5):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                return data
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                continue
            lengths = [int(h.split(b":")[1]) for h in head.lower().split(b"\r\n") if h.startswith(b"content-length:")]
            if lengths and len(body) >= lengths[0]:
                return data


async def test_idle_connections_outlive_the_clients_pool_expiry() -> None:
    # Equal timeouts race (a request sent on a connection the server is closing); the server must be clearly longer.
    assert KEEP_ALIVE_TIMEOUT >= 2 * float(LIMITS.keepalive_expiry or 5.0)
    port = free_port()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_simulate(port, None, 0, shutdown_trigger=stop.wait))
        with anyio.fail_after(15):
            while True:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    break
                except OSError:
                    await anyio.sleep(0.05)
        async with stream:
            first = await _get(stream, "/esplora/blocks/tip/height")
            assert first.startswith(b"HTTP/1.1 200")
            await anyio.sleep(6.0)  # idle past hypercorn's default keep-alive timeout (5 s) and httpx's expiry
            second = await _get(stream, "/esplora/blocks/tip/height")
            assert second.startswith(b"HTTP/1.1 200"), second
        stop.set()


async def test_controls_work_the_same_under_the_simulate_mount() -> None:
    sims = Simulators()
    sims.seed_demo()
    treasury = sims.btc_wallet.address
    coin = sims.esplora.utxos_json(treasury)[0]
    user = sims.btc_users[0].address
    raw = sims.btc_wallet.sign_spend(
        [(coin["txid"], coin["vout"], coin["value"])],
        [(user, 100_000), (treasury, coin["value"] - 100_000 - 2_000)],
        sequence=0xFFFFFFFD,
    )
    transport = httpx.ASGITransport(app=sims.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        txid = (await client.post("/esplora/tx", content=raw)).text
        r = await client.put("/esplora/_sim/fees", json={"estimates": {"6": 40.0}, "mempool_min": 20.0})
        assert r.status_code == 200
        assert r.json()["evicted"] == [txid]
        assert (await client.get("/esplora/fee-estimates")).json() == {"6": 40.0}
        payments = (await client.get("/esplora/_sim/payments")).json()
        assert payments == [{"txid": txid, "address": user, "value": 100_000, "status": "evicted"}]
        await client.put("/esplora/_sim/fees", json={"mempool_min": 1.0})
        assert (await client.post("/esplora/tx", content=raw)).text == txid
        mined = (await client.post("/esplora/_sim/mine", json={"blocks": 2})).json()
        assert mined["mined"] == [txid]
        reorg = await client.post("/esplora/_sim/reorg", json={"depth": 2, "drop": False})
        assert reorg.json()["returned"] == [txid]
        spend = await client.post("/esplora/_sim/spend", json={"outpoint": f"{coin['txid']}:{coin['vout']}"})
        assert spend.json()["conflicted"] == [txid]
        assert (await client.get("/esplora/_sim/payments")).json()[0]["status"] == "conflicted"
        assert (await client.post("/esplora/_sim/evict", json={"txid": txid})).status_code == 400
        assert (await client.post("/esplora/_sim/mine", json={"block": 1})).status_code == 400
