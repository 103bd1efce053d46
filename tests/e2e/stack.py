"""End-to-end building blocks: ``icy-backend simulate`` as a subprocess, service settings from its env file,
fault control, timed requests and a PostgreSQL database per test module.

Every network target is 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from icy_backend.sim.esplora_chain import RECORD_ENV
from tests.e2e.server import REPO, free_port

SLA_MS = {
    "/healthz": 200,
    "/readyz": 500,
    "/api/v1/health/db": 500,
    "/api/v1/health/external": 2000,
    "/api/v1/health/jobs": 100,
}
HEALTH_PATHS = tuple(SLA_MS)
# Generous but meaningful: a loaded 2-core CI box running the simulator, two services, PostgreSQL and pytest adds
# scheduling noise on top of the SLA (one CI run saw a 580 ms /healthz while another job loaded the machine). A
# missed deadline still shows (a hanging check costs seconds); the precise latencies are bench.health_latency's.
SLA_SLACK_MS = 600
PREFIXES = {"esplora": "/esplora", "base_rpc": "/evm", "coingecko": "/coingecko", "mochi_pay": "/mochi"}


@dataclass
class Simulator:
    process: subprocess.Popen[bytes]
    base_url: str
    env: dict[str, str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return self.base_url + path


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@contextmanager
def simulator(tmp_path: Path, *, block_time: float = 1.0, btc_block_time: float | None = None) -> Iterator[Simulator]:
    """Run ``icy-backend simulate`` on a free loopback port until the block ends."""
    port = free_port()
    env_path = tmp_path / "sim.env"
    log_path = tmp_path / "sim.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    if RECORD_ENV in os.environ:  # the session re-verifies what this simulator accepts too (tests/conftest.py)
        env[RECORD_ENV] = os.environ[RECORD_ENV]
    cmd = [sys.executable, "-m", "icy_backend.cli", "simulate", "--port", str(port), "--env-file", str(env_path)]
    cmd += ["--block-time", str(block_time)]
    if btc_block_time is not None:  # 0: Bitcoin blocks only on POST /esplora/_sim/mine
        cmd += ["--btc-block-time", str(btc_block_time)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not env_path.exists():
                if process.poll() is not None:
                    raise RuntimeError(f"simulator exited early:\n{log_path.read_text(errors='replace')}")
                if time.monotonic() > deadline:
                    raise RuntimeError("simulator did not write its env file within 30 s")
                time.sleep(0.05)
            yield Simulator(process, f"http://127.0.0.1:{port}", read_env_file(env_path), log_path)
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def service_env(sim: Simulator, database_url: str, **overrides: str) -> dict[str, str]:
    """Settings for ``serve`` against the standalone simulators: test env, no sandbox, fast jobs, short breakers."""
    env = {k: v for k, v in sim.env.items() if not k.startswith("DEMO_")}
    env.update(
        {
            "APP_ENV": "test",
            "SANDBOX": "off",
            "DATABASE_URL": database_url,
            "INDEX_INTERVAL": "1",
            "JOB_FIRST_RUN_DELAY": "0.5",
            "BLOCKCHAIN_CONFIRMATIONS": "1",
            "DB_CONNECT_TIMEOUT_SECONDS": "1",
        }
    )
    for service in ("BLOCKSTREAM_API", "BASE_RPC", "COINGECKO", "MOCHI_PAY"):
        env[f"CB_{service}_TTL_SECONDS"] = "2"
    env.update(overrides)
    return env


@dataclass
class Timed:
    path: str
    status: int
    ms: float
    body: Any
    headers: httpx.Headers = field(default_factory=httpx.Headers)

    @property
    def error(self) -> Any:
        return self.body.get("error") if isinstance(self.body, dict) else None


async def timed_get(client: httpx.AsyncClient, path: str, **kwargs: Any) -> Timed:
    start = time.perf_counter()
    r = await client.get(path, **kwargs)
    ms = (time.perf_counter() - start) * 1000
    try:
        body: Any = r.json()
    except ValueError:
        body = r.text
    return Timed(path, r.status_code, ms, body, r.headers)


class SimControl:
    """Fault control and inspection of the standalone simulators."""

    def __init__(self, sim: Simulator) -> None:
        self.client = httpx.AsyncClient(base_url=sim.base_url, timeout=5)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def set_fault(self, upstream: str, **fault: Any) -> None:
        r = await self.client.put(f"{PREFIXES[upstream]}/_sim/faults", json={"path": "*", **fault})
        r.raise_for_status()

    async def clear(self, upstream: str | None = None) -> None:
        for name in [upstream] if upstream else list(PREFIXES):
            (await self.client.delete(f"{PREFIXES[name]}/_sim/faults")).raise_for_status()

    async def payments(self) -> list[dict[str, Any]]:
        r = await self.client.get("/esplora/_sim/payments")
        r.raise_for_status()
        data: list[dict[str, Any]] = r.json()
        return data

    async def rpc(self, method: str, params: list[Any]) -> Any:
        r = await self.client.post("/evm", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        r.raise_for_status()
        body = r.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    async def address_chain_txs(self, address: str, max_pages: int = 200) -> list[dict[str, Any]]:
        """Every confirmed transaction of ``address``, newest first (Esplora paging, 25 per page)."""
        txs: list[dict[str, Any]] = []
        path = f"/esplora/address/{address}/txs/chain"
        for _ in range(max_pages):
            r = await self.client.get(path)
            r.raise_for_status()
            page: list[dict[str, Any]] = r.json()
            txs += page
            if len(page) < 25:
                return txs
            path = f"/esplora/address/{address}/txs/chain/{page[-1]['txid']}"
        raise AssertionError("more history pages than expected")

    async def logs(self, address: str, topic0: str, from_block: int, to_block: int, chunk: int = 1000) -> list[Any]:
        """Every log of ``address`` with ``topic0`` in ``[from_block, to_block]`` (chunked under the range cap)."""
        found: list[Any] = []
        start = from_block
        while start <= to_block:
            end = min(to_block, start + chunk - 1)
            found += await self.rpc(
                "eth_getLogs", [{"address": address, "topics": [topic0], "fromBlock": hex(start), "toBlock": hex(end)}]
            )
            start = end + 1
        return found


@contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback TCP port that completes the handshake (kernel backlog) and never answers: a hanging database."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()


async def wait_for(predicate: Any, *, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``await predicate()`` until truthy or ``timeout`` seconds pass; returns the last truthiness."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(interval)


async def payouts_paid_once(database_url: str, ctl: SimControl, treasury: str) -> int:
    """Assert that no payout was paid twice and every completed payout was paid exactly as its row says.

    "Paid" means a ``confirmed`` output on the simulator's final chain (``GET /esplora/_sim/payments``): a payment in
    the mempool, replaced, evicted or conflicted is not one. Every confirmed payment to a user must belong to one
    payout (through one of its candidate transactions), no payout owns two, a ``completed`` payout owns exactly the
    one its row names (address and amount as the row says), and a ``failed`` one owns none. Also asserts no payout
    is left ``broadcasting``. Returns the number of completed payouts.
    """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, btc_address, total, status, btc_transaction_hash"
                        " FROM onchain_btc_processed_transactions"
                    )
                )
            ).all()
            candidates = (await conn.execute(text("SELECT payout_id, txid FROM btc_payout_candidates"))).all()
    finally:
        await engine.dispose()
    owner: dict[str, int] = {str(txid): int(payout_id) for payout_id, txid in candidates}
    owner.update({str(r[4]): int(r[0]) for r in rows if r[4]})
    confirmed = [
        p for p in await ctl.payments() if p["address"] != treasury and p.get("status", "confirmed") == "confirmed"
    ]
    paid: dict[int, list[dict[str, Any]]] = {}
    for payment in confirmed:
        payout_id = owner.get(payment["txid"])
        assert payout_id is not None, ("a confirmed payment that no payout sent", payment)
        paid.setdefault(payout_id, []).append(payment)
    twice = {k: v for k, v in paid.items() if len(v) > 1}
    assert not twice, ("payouts paid more than once", twice)
    assert not [r for r in rows if r[3] == "broadcasting"], rows
    completed = [r for r in rows if r[3] == "completed"]
    for payout_id, address, total, _status, txid in completed:
        found = paid.get(int(payout_id), [])
        assert len(found) == 1, ("a completed payout with no confirmed payment", payout_id, txid)
        payment = found[0]
        assert payment["txid"] == txid, (payout_id, txid, payment)
        assert payment["address"] == address and int(payment["value"]) == int(total), (payout_id, payment)
    for payout_id, *_rest in (r for r in rows if r[3] == "failed"):
        assert int(payout_id) not in paid, ("a failed payout was paid", payout_id, paid[int(payout_id)])
    return len(completed)
