"""Combined simulators: demo seed, mounts, ticker, env lines, and the standalone server."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import httpx
import pytest
from eth_abi.abi import encode
from eth_account import Account

from icy_backend.sim.combined import Simulators
from icy_backend.sim.faults import Fault
from icy_backend.sim.serve import run_simulate

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_seeded_demo_through_the_mounts() -> None:
    sims = Simulators()
    sims.seed_demo()
    env = sims.env_lines("http://sim")
    assert env["BTC_NETWORK"] == "testnet"
    assert env["BLOCKCHAIN_CHAIN_ID"] == "84532"
    assert env["BLOCKCHAIN_BTC_TREASURY_ADDRESS"].startswith("tb1q")
    assert Account.from_key(env["BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY"]).address == sims.signer_address
    transport = httpx.ASGITransport(app=sims.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        treasury = env["BLOCKCHAIN_BTC_TREASURY_ADDRESS"]
        stats = (await client.get(f"/esplora/address/{treasury}")).json()
        assert stats["chain_stats"]["funded_txo_sum"] == 250_000_000
        assert len((await client.get(f"/esplora/address/{treasury}/utxo")).json()) == 5
        call = {"to": env["BLOCKCHAIN_ICY_CONTRACT_ADDR"], "data": "0x18160ddd"}
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [call, "latest"]}
        supply = int((await client.post("/evm", json=body)).json()["result"], 16)
        assert supply == 1_001_000 * 10**18
        data = "0x70a08231" + encode(["address"], [env["DEMO_LOCKED_TREASURY_ADDRESS"]]).hex()
        body["params"] = [{"to": env["BLOCKCHAIN_ICY_CONTRACT_ADDR"], "data": data}, "latest"]
        assert int((await client.post("/evm/", json=body)).json()["result"], 16) == 900_000 * 10**18
        price = (await client.get("/coingecko/simple/price", params={"ids": "bitcoin", "vs_currencies": "usd"})).json()
        assert price == {"bitcoin": {"usd": 65000.12}}
        mochi = (await client.get("/mochi/api/v1/console-tokens/icy/circulated")).json()
        assert mochi["data"]["icy"]["value"] == str(1000 * 10**18)
        # Faults are per simulator: one on /esplora leaves /coingecko alone.
        await client.put("/esplora/_sim/faults", json={"path": "*", "status": 500})
        assert (await client.get("/esplora/blocks/tip/height")).status_code == 500
        assert (await client.get("/coingecko/simple/price?ids=bitcoin&vs_currencies=usd")).status_code == 200
        assert sims.esplora.faults.all() == [Fault(path="*", status=500)]
        await client.delete("/esplora/_sim/faults")
        mined = await client.post("/esplora/_sim/mine")
        assert mined.json()["height"] == sims.esplora.height


async def test_seed_is_deterministic_and_ticker_makes_progress() -> None:
    a, b = Simulators(), Simulators()
    a.seed_demo()
    b.seed_demo()
    assert a.env_lines("http://x") == b.env_lines("http://x")
    head = a.evm.head
    for _ in range(12):
        a.tick()
        b.tick()
    assert a.evm.head == head + 12
    assert a.evm.balances == b.evm.balances
    swaps = a.evm.get_logs({"address": a.evm.swap_address, "fromBlock": hex(head + 1)})
    assert len(swaps) >= 3
    async with anyio.create_task_group() as tg:
        await tg.start(a.run_ticker, 0.01)
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    assert a.evm.head > head + 13


async def test_run_simulate_serves_and_writes_env(tmp_path: Path) -> None:
    port = free_port()
    env_path = tmp_path / "sim.env"
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_simulate, port, str(env_path), 0.05)
            while not env_path.exists():
                await anyio.sleep(0.05)
            lines = dict(line.split("=", 1) for line in env_path.read_text().splitlines())
            assert lines["BTC_BLOCKSTREAM_API_URL"] == f"http://127.0.0.1:{port}/esplora"
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{lines['BTC_BLOCKSTREAM_API_URL']}/blocks/tip/height")
                assert r.status_code == 200
                first = int(r.text)
                await anyio.sleep(0.3)
                r = await client.get(f"{lines['BTC_BLOCKSTREAM_API_URL']}/blocks/tip/height")
                assert int(r.text) > first
                # A reset fault is a transport error under a real server too.
                await client.put(f"http://127.0.0.1:{port}/mochi/_sim/faults", json={"path": "*", "reset": True})
                with pytest.raises(httpx.TransportError):
                    await client.get(f"{lines['MOCHI_PAY_API_URL']}/api/v1/console-tokens/icy/circulated")
            tg.cancel_scope.cancel()


async def test_run_simulate_stops_on_shutdown_trigger() -> None:
    port = free_port()
    stop = anyio.Event()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_simulate(port, None, 1.0, shutdown_trigger=stop.wait))
            async with httpx.AsyncClient() as client:
                for _ in range(200):
                    try:
                        r = await client.get(f"http://127.0.0.1:{port}/esplora/blocks/tip/height")
                        break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)
                assert r.status_code == 200
            stop.set()


async def test_simulate_with_two_replicas_serves_a_lagging_evm2(tmp_path: Path) -> None:
    port = free_port()
    env_path = tmp_path / "sim.env"
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_simulate(port, str(env_path), 0.05, replicas=2))
            while not env_path.exists():
                await anyio.sleep(0.05)
            lines = dict(line.split("=", 1) for line in env_path.read_text().splitlines())
            base = f"http://127.0.0.1:{port}"
            assert lines["BLOCKCHAIN_BASE_RPC_ENDPOINTS"] == f"{base}/evm,{base}/evm2"  # primary first
            assert lines["BTC_BLOCKSTREAM_API_URLS"] == f"{base}/esplora,{base}/esplora2"
            body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
            async with httpx.AsyncClient() as client:
                r = await client.put(f"{base}/evm2/_sim/lag", json={"blocks": 50})
                assert r.status_code == 200
                assert r.json()["blocks"] == 50
                lagging = int((await client.post(f"{base}/evm2", json=body)).json()["result"], 16)
                primary = int((await client.post(f"{base}/evm", json=body)).json()["result"], 16)
                assert lagging <= max(0, primary - 50)  # read first: the ticker may mine in between
                assert (await client.put(f"{base}/evm2/_sim/lag", json={"block": 1})).status_code == 400
                assert (await client.put(f"{base}/esplora2/_sim/lag", json={"blocks": 3})).status_code == 200
                behind = int((await client.get(f"{base}/esplora2/blocks/tip/height")).text)
                tip = int((await client.get(f"{base}/esplora/blocks/tip/height")).text)
                assert tip - behind >= 3
            tg.cancel_scope.cancel()


def test_demo_swaps_are_priced_as_the_service_of_the_env_file_prices() -> None:
    sims = Simulators()
    sims.seed_demo()
    # the env file's service knows no locked treasury: circulating = total supply + Mochi Pay
    circulated = sims.evm.total_supply + sims.mochi.value_wei
    ratio = circulated * 10**16 // (sims.treasury_sats() * 10**18)
    assert sims.demo_btc_amount(100 * 10**18) == 100 * 10**18 // (ratio * 100)
    sandbox = Simulators(service_knows_locked_treasury=True)
    sandbox.seed_demo()
    assert sandbox.circulated_wei() == circulated - 900_000 * 10**18
