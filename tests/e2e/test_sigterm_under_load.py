"""SIGTERM under sustained load (SPEC §3, §12): accepted requests complete, /readyz flips first, exit 0,
jobs cancelled cleanly, and after a restart no payout is left half-done or paid twice.

The service runs against ``icy-backend simulate`` (a swap every few blocks, so payouts are being made while the
signal arrives) and PostgreSQL. Esplora's ``/address`` answers after 800 ms, so oracle requests are in flight
across the whole drain window.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from tests.e2e.server import serve
from tests.e2e.stack import (
    SimControl,
    payouts_paid_once,
    service_env,
    simulator,
    wait_for,
)
from tests.pg import drop_database, recreate_database, require_pg, unique_db_name

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

DRAIN_S = 1.0
WORKERS = 24
MAX_REQUESTS = 4000  # bound over the whole run
PATHS = (
    "/healthz",
    "/api/v1/health/jobs",
    "/api/v1/oracle/icy-btc-ratio-cached",
    "/api/v1/transactions",
    "/metrics",
    "/api/v1/oracle/treasury-btc",  # slow: in flight when the listener closes
)


@dataclass
class Outcome:
    path: str
    started: float
    ended: float
    status: int | None
    error: str | None


async def test_sigterm_under_load(tmp_path: Path) -> None:
    require_pg()
    name = unique_db_name("icy_e2e_sigterm")
    db_url = await recreate_database(name)
    (tmp_path / "sim").mkdir()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    try:
        with simulator(tmp_path / "sim", block_time=0.5) as sim:
            env = service_env(sim, db_url, SHUTDOWN_DRAIN_DELAY_SECONDS=str(DRAIN_S), INDEX_INTERVAL="0.5")
            ctl = SimControl(sim)
            try:
                with serve(tmp_path / "first", env, ready_path="/readyz") as server:
                    await _load_and_terminate(server, ctl)
                    log = server.log()
                assert "Traceback" not in log, log[-4000:]
                assert "received SIGTERM" in log
                assert "icy-backend stopped" in log
                await ctl.clear()
                # Restart on the same database; one payout run reconciles whatever the signal interrupted.
                with serve(tmp_path / "second", env, ready_path="/readyz") as again:
                    async with httpx.AsyncClient(base_url=again.base_url, timeout=10) as c:

                        async def payout_ran() -> bool:
                            jobs = (await c.get("/api/v1/health/jobs")).json()["jobs"]
                            job = jobs["btc_pending_transaction_processing"]
                            return bool(job["success_count"] >= 2 and job["status"] != "running")

                        assert await wait_for(payout_ran, timeout=20)
                    completed = await payouts_paid_once(db_url, ctl, sim.env["BLOCKCHAIN_BTC_TREASURY_ADDRESS"])
                print(f"payouts completed and paid exactly once: {completed}")
            finally:
                await ctl.aclose()
    finally:
        await drop_database(name)


async def _load_and_terminate(server: object, ctl: SimControl) -> None:
    from tests.e2e.server import Server

    assert isinstance(server, Server)
    outcomes: list[Outcome] = []
    readyz: list[tuple[float, int | None, str | None]] = []
    stop = anyio.Event()
    sent = 0
    term_at = 0.0

    # Let payouts happen first (swaps are mined every few blocks).
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as c:

        async def payouts_running() -> bool:
            job = (await c.get("/api/v1/health/jobs")).json()["jobs"]["btc_pending_transaction_processing"]
            return bool(job["success_count"] >= 3)

        assert await wait_for(payouts_running, timeout=20)
    await ctl.client.put("/esplora/_sim/faults", json={"path": "/address", "latency_ms": 800})

    async def worker(n: int) -> None:
        nonlocal sent
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15, limits=limits) as client:
            i = n
            while not stop.is_set() and sent < MAX_REQUESTS:
                sent += 1
                path = PATHS[i % len(PATHS)]
                i += 1
                started = time.monotonic()
                try:
                    r = await client.get(path)
                    outcomes.append(Outcome(path, started, time.monotonic(), r.status_code, None))
                except httpx.HTTPError as exc:
                    outcomes.append(Outcome(path, started, time.monotonic(), None, type(exc).__name__))
                    await anyio.sleep(0.05)

    async def probe_readyz() -> None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=2) as client:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    readyz.append((t, (await client.get("/readyz")).status_code, None))
                except httpx.HTTPError as exc:
                    readyz.append((t, None, type(exc).__name__))
                await anyio.sleep(0.05)

    async def terminate() -> None:
        nonlocal term_at
        await anyio.sleep(2.0)
        term_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while server.process.poll() is None and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        stop.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(WORKERS):
                tg.start_soon(worker, n)
            tg.start_soon(probe_readyz)
            tg.start_soon(terminate)

    assert server.process.returncode == 0, server.log()[-4000:]
    # Every request sent before the end of the drain window was accepted and got a full answer.
    accepted = [o for o in outcomes if o.started < term_at + DRAIN_S - 0.2]
    failed = [o for o in accepted if o.status is None or o.status >= 500]
    assert len(accepted) > 50, len(accepted)
    assert not failed, failed[:10]
    in_flight = [o for o in accepted if o.started < term_at + DRAIN_S < o.ended]
    # readyz: 200 before the signal, 503 from the signal on, before the listener closes.
    before = [s for t, s, _ in readyz if t < term_at - 0.1]
    after = [(t - term_at, s, e) for t, s, e in readyz if t > term_at + 0.15]
    assert before and set(before) == {200}, before
    assert after and after[0][1] == 503, after[:5]
    first_refused = next((dt for dt, s, _ in after if s is None), None)
    flipped = next(dt for dt, s, _ in after if s == 503)
    assert first_refused is None or flipped < first_refused
    print(
        f"sigterm: {len(outcomes)} requests, {len(accepted)} accepted before drain end, all answered;"
        f" {len(in_flight)} in flight when the listener closed; readyz 503 at +{flipped:.2f}s,"
        f" first refused at {first_refused if first_refused is None else f'+{first_refused:.2f}s'}"
    )


async def test_sigkill_after_broadcast_then_restart_pays_once(tmp_path: Path) -> None:
    """Killed between broadcast and its answer (Esplora accepts ``POST /tx`` but never replies): after a restart
    the ``broadcasting`` row is reconciled from the chain, never paid a second time."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    require_pg()
    name = unique_db_name("icy_e2e_sigkill")
    db_url = await recreate_database(name)
    for sub in ("sim", "first", "second"):
        (tmp_path / sub).mkdir()
    engine = create_async_engine(db_url)

    async def broadcasting() -> int:
        async with engine.connect() as conn:
            value = await conn.scalar(
                text("SELECT count(*) FROM onchain_btc_processed_transactions WHERE status = 'broadcasting'")
            )
        return int(value or 0)

    try:
        with simulator(tmp_path / "sim", block_time=0.5) as sim:
            env = service_env(sim, db_url, INDEX_INTERVAL="0.5")
            ctl = SimControl(sim)
            try:
                with serve(tmp_path / "first", env, ready_path="/readyz") as server:
                    await ctl.client.put("/esplora/_sim/faults", json={"path": "/tx", "hang_after": True})
                    assert await wait_for(lambda: _positive(broadcasting), timeout=30), "no payout reached broadcasting"

                    # Kill only once the node has taken the transaction (its answer hangs): the row is committed
                    # ``broadcasting`` a moment before the POST is sent, and this test is about the moment after.
                    async def sent() -> int:
                        return len(await ctl.payments())

                    assert await wait_for(lambda: _positive(sent), timeout=30), "the broadcast never reached the node"
                    server.process.kill()
                    server.process.wait(10)
                await ctl.clear()
                payments_before = len(await ctl.payments())
                assert payments_before > 0
                with serve(tmp_path / "second", env, ready_path="/readyz") as again:
                    async with httpx.AsyncClient(base_url=again.base_url, timeout=10) as c:

                        async def reconciled() -> bool:
                            job = (await c.get("/api/v1/health/jobs")).json()["jobs"]
                            payout = job["btc_pending_transaction_processing"]
                            return bool(payout["success_count"] >= 2) and await broadcasting() == 0

                        assert await wait_for(reconciled, timeout=30)
                    completed = await payouts_paid_once(db_url, ctl, sim.env["BLOCKCHAIN_BTC_TREASURY_ADDRESS"])
                    log = again.log()
                assert "Traceback" not in log
                print(f"sigkill: {completed} payouts completed, each paid exactly once after the restart")
            finally:
                await ctl.aclose()
    finally:
        await engine.dispose()
        await drop_database(name)


async def _positive(count: Callable[[], Awaitable[int]]) -> bool:
    return await count() > 0
