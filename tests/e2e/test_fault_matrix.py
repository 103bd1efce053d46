"""Fault matrix (SPEC §5, §7, §8, §12): the real service against ``icy-backend simulate`` and real PostgreSQL.

One simulator and two service processes sharing one PostgreSQL database are started for the module: ``A`` holds
the job leader lock (jobs, business routes), ``B`` is a standby. The external health result is cached for 10 s
per process, so the cases alternate their health probes between A and B (each process is probed at most every
10 s) instead of waiting or restarting. For every upstream x fault kind:

* every health endpoint answers within its SLA (+ slack) with the right status, and the faulted check carries
  the right redacted error class (``circuit_open`` is accepted on A, whose breaker the jobs may have opened);
* the upstream's business route answers a clean 503 envelope, then ``circuit_open`` fast once the breaker opens;
* the jobs that call the upstream record the failure (``last_error``, ``consecutive_failures``) and recover
  after the fault is cleared.

The last case checks that nothing was lost or duplicated: indexed rows vs the simulator's chain, payouts vs
``GET /esplora/_sim/payments``. The database cases run a third instance against a silent TCP listener and a
closed port. A table of what was observed is printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from icy_backend.sim.abi import SWAP_TOPIC, TRANSFER_TOPIC
from tests.e2e.server import Server, serve
from tests.e2e.stack import (
    HEALTH_PATHS,
    SLA_MS,
    SLA_SLACK_MS,
    SimControl,
    Simulator,
    Timed,
    closed_port,
    payouts_paid_once,
    service_env,
    silent_listener,
    simulator,
    timed_get,
    wait_for,
)
from tests.pg import drop_database, recreate_database, require_pg, unique_db_name

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

EXTERNAL_CACHE_S = 10.0
# The first probe past the TTL answers from the last result at once and starts one refresh (stale-while-
# revalidate, SPEC §5), which ends within the external deadline; the status changes one refresh later.
EXTERNAL_DEADLINE_S = 1.5
UPSTREAMS = ("esplora", "base_rpc", "coingecko", "mochi_pay")
FAULTS: dict[str, dict[str, Any]] = {
    "slow": {"latency_ms": 3000},
    "hang": {"hang": True},
    "500": {"status": 500},
    "429": {"status": 429, "retry_after": 1},
    "malformed": {"malformed": True},
    "reset": {"reset": True},
}
# The class the faulted check reports (SPEC §5 redaction); a 429 that outlasts the probe deadline is a timeout.
EXPECTED_CLASS = {
    "slow": {"timeout"},
    "hang": {"timeout"},
    "500": {"http_5xx"},
    "429": {"http_4xx", "timeout"},
    "malformed": {"invalid_response"},
    "reset": {"connection_error"},
}
CHECK_NAME = {"esplora": "blockstream_api", "base_rpc": "base_rpc", "coingecko": "coingecko", "mochi_pay": "mochi_pay"}
CRITICAL = {"esplora", "base_rpc"}
# Jobs that call the upstream on every run (so a fault must show up in their status).
JOBS_CALLING = {
    "esplora": ("btc_transaction_indexing",),
    "base_rpc": ("icy_transaction_indexing", "icy_swap_transaction_indexing"),
    "coingecko": (),
    "mochi_pay": (),
}
BUSINESS_ROUTE = {
    "esplora": "/api/v1/oracle/treasury-btc",
    "base_rpc": "/api/v1/oracle/circulated-icy",
    "coingecko": "/api/v1/swap/info",
    "mochi_pay": "/api/v1/oracle/circulated-icy",
}
ERROR_CLASSES = {
    "timeout",
    "connection_refused",
    "connection_error",
    "http_5xx",
    "http_4xx",
    "invalid_response",
    "chain_id_mismatch",
    "circuit_open",
    "not_configured",
}
LEAK_MARKERS = ("Traceback", "127.0.0.1", "http://", "localhost", "Exception", "sqlalchemy", "asyncpg")
CASES = [(u, k) for u in UPSTREAMS for k in FAULTS]


@dataclass
class Row:
    case: str
    health: dict[str, Timed] = field(default_factory=dict)
    check_error: str | None = None
    probed: str = ""
    business: str = ""
    jobs: str = ""

    def line(self) -> str:
        cells = [f"{self.case:<22}"]
        for path in HEALTH_PATHS:
            t = self.health.get(path)
            cells.append(f"{t.status} {t.ms:6.0f}" if t else "    -     ")
        cells += [f"{self.probed}:{self.check_error or '-':<17}", self.business, self.jobs]
        return " | ".join(cells)


@dataclass
class Matrix:
    sim: Simulator
    a: Server
    b: Server
    db_url: str
    sim_env_file: Path
    rows: list[Row] = field(default_factory=list)
    last_external: dict[str, float] = field(default_factory=dict)


def _header() -> str:
    names = ["case".ljust(22), *(p.rsplit("/", 1)[-1].ljust(10) for p in HEALTH_PATHS)]
    return " | ".join([*names, "check error", "business route", "jobs"])


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Matrix]:
    require_pg()
    db_name = unique_db_name("icy_e2e_fault_matrix")
    db_url = anyio.run(recreate_database, db_name)
    base = tmp_path_factory.mktemp("fault_matrix")
    with contextlib.ExitStack() as stack:
        (base / "sim").mkdir()
        (base / "a").mkdir()
        (base / "b").mkdir()
        sim = stack.enter_context(simulator(base / "sim", block_time=1.0))
        env = service_env(sim, db_url, CB_BASE_RPC_THRESHOLD="3")
        a = stack.enter_context(serve(base / "a", env, ready_path="/readyz"))
        # Let A take the leader lock before B starts, so B is the standby.
        deadline = time.monotonic() + 15
        while httpx.get(a.base_url + "/api/v1/health/jobs", timeout=2).json().get("role") != "leader":
            assert time.monotonic() < deadline, "service A never became the job leader"
            time.sleep(0.2)
        b = stack.enter_context(serve(base / "b", env, ready_path="/readyz"))
        m = Matrix(sim, a, b, db_url, base / "sim" / "sim.env")
        yield m
        _print_table(request, m.rows)
        stack.close()
        anyio.run(drop_database, db_name)


def _print_table(request: pytest.FixtureRequest, rows: list[Row]) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = ["", "fault matrix (status latency_ms per endpoint; SLA ms: " + str(SLA_MS) + ")", _header()]
    lines += [r.line() for r in rows]
    if reporter is None:
        print("\n".join(lines))
        return
    ctx = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with ctx:
        for line in lines:
            reporter.write_line(line)


def assert_clean_envelope(t: Timed) -> None:
    """A business error: the envelope, a short error class, no traces, hosts, URLs or driver names."""
    assert isinstance(t.body, dict), t
    assert set(t.body) <= {"data", "message", "error", "errors"}, t.body
    assert isinstance(t.error, str) and t.error, t.body
    raw = str(t.body)
    for marker in LEAK_MARKERS:
        assert marker not in raw, (marker, t.body)


async def _jobs(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/api/v1/health/jobs")).json()
    jobs: dict[str, Any] = body["jobs"]
    return jobs


async def _revalidate_external(m: Matrix, server: Server, client: httpx.AsyncClient) -> None:
    """Wait for the external result to expire, start its refresh with one probe (answered at once from the
    stale result, within the SLA) and wait for the refresh to end."""
    ready_at = m.last_external.get(server.base_url, 0.0) + EXTERNAL_CACHE_S + 0.3
    await anyio.sleep(max(0.0, ready_at - time.monotonic()))
    stale = await timed_get(client, "/api/v1/health/external")
    assert stale.ms < SLA_MS["/api/v1/health/external"] + SLA_SLACK_MS, stale
    await anyio.sleep(EXTERNAL_DEADLINE_S + 0.5)
    m.last_external[server.base_url] = time.monotonic()


async def _probe_health(m: Matrix, server: Server, row: Row) -> None:
    """Every health endpoint once on ``server``, after its external result was refreshed under the fault."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        await _revalidate_external(m, server, client)
        for path in HEALTH_PATHS:
            row.health[path] = await timed_get(client, path)


async def _business(a: httpx.AsyncClient, upstream: str, kind: str) -> str:
    """Drive the upstream's business route under the fault; returns a table cell."""
    path = BUSINESS_ROUTE[upstream]
    if upstream not in CRITICAL or kind == "slow":
        # Non-critical upstreams degrade (Mochi Pay counts as 0, the price is cached); a slow upstream is
        # still inside the client's read timeout: the route answers, slowly, or a clean 503.
        t = await timed_get(a, path)
        if upstream == "mochi_pay":
            assert t.status == 200, t
        elif t.status != 200:
            assert t.status == 503, t
            assert_clean_envelope(t)
        return f"{t.status} {t.error or 'ok'} {t.ms:.0f}ms"
    first: Timed | None = None
    opened: Timed | None = None
    if kind == "hang":
        # Each call waits for the client deadline; three at once trip the breaker (threshold 3).
        results: list[Timed] = []

        async def one() -> None:
            results.append(await timed_get(a, path))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
        for t in results:
            # A 200 here joined a computation that started before the fault (single-flight): a good, late answer.
            assert t.status in (200, 503), t
            if t.status == 503:
                assert_clean_envelope(t)
        first = max((t for t in results if t.status == 503), key=lambda t: t.ms, default=None)
    for _ in range(10):
        t = await timed_get(a, path)
        assert t.status == 503, t
        assert_clean_envelope(t)
        assert t.error in ERROR_CLASSES, t.body
        first = first or t
        if t.error == "circuit_open":
            opened = t
            break
    assert first is not None
    assert opened is not None, f"{upstream}/{kind}: the breaker never opened"
    # Once open, the route fails fast.
    assert opened.ms < 500, opened
    return f"503 {first.error} {first.ms:.0f}ms -> circuit_open {opened.ms:.0f}ms"


@pytest.mark.parametrize(("upstream", "kind"), CASES, ids=[f"{u}-{k}" for u, k in CASES])
async def test_upstream_fault(matrix: Matrix, upstream: str, kind: str) -> None:
    m = matrix
    index = CASES.index((upstream, kind))
    target, target_name = (m.a, "A") if index % 2 == 0 else (m.b, "B")
    row = Row(f"{upstream}/{kind}", probed=target_name)
    m.rows.append(row)
    ctl = SimControl(m.sim)
    async with httpx.AsyncClient(base_url=m.a.base_url, timeout=30) as a:
        before = await _jobs(a)
        watched = [j for j in JOBS_CALLING[upstream] if j in before] if kind != "slow" else []
        business_cell: list[str] = []
        try:
            await ctl.set_fault(upstream, **FAULTS[kind])
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:

                    async def business() -> None:
                        business_cell.append(await _business(a, upstream, kind))

                    tg.start_soon(business)
                    tg.start_soon(_probe_health, m, target, row)

                    async def job_failed() -> bool:
                        now = await _jobs(a)
                        return any(
                            now[j]["failure_count"] > before[j]["failure_count"] and now[j]["consecutive_failures"] > 0
                            for j in watched
                        )

                    failed = await wait_for(job_failed, timeout=25) if watched else None
            after = await _jobs(a)
        finally:
            await ctl.clear(upstream)
            await ctl.aclose()
            if kind == "slow":
                # A computation started under the slow fault (a job's, say) is still in flight for up to its
                # latency; the next case's requests would join it (single-flight) and get its late, good answer.
                await anyio.sleep(FAULTS["slow"]["latency_ms"] / 1000 + 0.5)
        row.business = business_cell[0] if business_cell else "-"

        # Health: every endpoint within its SLA, readiness untouched by an upstream fault.
        for path, t in row.health.items():
            assert t.ms < SLA_MS[path] + SLA_SLACK_MS, (path, t.ms, t.body)
        assert row.health["/healthz"].status == 200
        assert row.health["/readyz"].status == 200, row.health["/readyz"].body
        assert row.health["/api/v1/health/db"].status == 200
        assert row.health["/api/v1/health/jobs"].status in (200, 503)
        ext = row.health["/api/v1/health/external"]
        assert ext.status == (503 if upstream in CRITICAL else 200), ext.body
        check = ext.body["checks"][CHECK_NAME[upstream]]
        row.check_error = check.get("error")
        assert check["status"] == "unhealthy", check
        allowed = EXPECTED_CLASS[kind] | ({"circuit_open"} if target is m.a else set())
        assert check["error"] in allowed, check

        # Jobs: the failure is recorded with a redacted class, then the job recovers once the fault is gone.
        if not watched:
            row.jobs = "n/a" if kind != "slow" else "not expected to fail"
            return
        assert failed, f"no job of {watched} recorded a failure: {after}"
        failing = [j for j in watched if after[j]["consecutive_failures"] > 0]
        errors = {after[j]["last_error"] for j in failing}
        assert errors <= ERROR_CLASSES, errors
        cleared = time.monotonic()

        async def recovered() -> bool:
            now = await _jobs(a)
            return all(now[j]["consecutive_failures"] == 0 for j in watched)

        assert await wait_for(recovered, timeout=25), await _jobs(a)
        row.jobs = f"{','.join(failing)} {sorted(errors)} recovered {time.monotonic() - cleared:.1f}s"

        async def route_ok() -> bool:
            return (await a.get(BUSINESS_ROUTE[upstream])).status_code == 200

        assert await wait_for(route_ok, timeout=15), "the business route did not recover"


async def test_nothing_lost_or_duplicated(matrix: Matrix) -> None:
    """After the faults: indexed rows equal the simulator's chain, every payout paid exactly once."""
    m = matrix
    ctl = SimControl(m.sim)
    await ctl.clear()
    engine = create_async_engine(m.db_url)
    try:
        async with httpx.AsyncClient(base_url=m.a.base_url, timeout=10) as a:
            registered = set(await _jobs(a))
            settled_after = time.monotonic()

            async def settled() -> bool:
                jobs = await _jobs(a)
                return (
                    all(
                        j["consecutive_failures"] == 0
                        and j["last_success_time"] is not None
                        and j["status"] != "running"
                        and j["success_count"] > 0
                        for j in jobs.values()
                    )
                    and time.monotonic() - settled_after > 3
                )

            assert await wait_for(settled, timeout=30), await _jobs(a)
            # Once the breakers are closed again the external endpoint is healthy on both processes.
            for server in (m.a, m.b):
                async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as c:
                    await _revalidate_external(m, server, c)
                    ext = await timed_get(c, "/api/v1/health/external")
                assert ext.status == 200, ext.body

        async with engine.connect() as conn:
            cursors = {
                r[0]: (r[1], r[2])
                for r in await conn.execute(text("SELECT name, block_number, txid FROM indexer_cursors"))
            }
            icy_rows = (
                await conn.execute(
                    text("SELECT transaction_hash, log_index, block_number FROM onchain_icy_transactions")
                )
            ).all()
            btc_rows = (
                await conn.execute(
                    text("SELECT transaction_hash, output_index, type, block_height FROM onchain_btc_transactions")
                )
            ).all()
            swap_rows = (
                await conn.execute(
                    text("SELECT transaction_hash, log_index, block_number FROM onchain_icy_swap_transactions")
                )
            ).all()
        env = m.sim.env
        checked: list[str] = []
        # No silent skip: every job this check covers must be running in the leader.
        for job in (
            "icy_transaction_indexing",
            "icy_swap_transaction_indexing",
            "btc_transaction_indexing",
            "btc_pending_transaction_processing",
        ):
            assert job in registered, (job, sorted(registered))
        for job, table_rows, address, topic, start in (
            ("icy_transaction_indexing", icy_rows, env["BLOCKCHAIN_ICY_CONTRACT_ADDR"], TRANSFER_TOPIC, 0),
            (
                "icy_swap_transaction_indexing",
                swap_rows,
                env["BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR"],
                SWAP_TOPIC,
                int(env["BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER"]),
            ),
        ):
            # Up to the cursor (the last block the indexer says it fully scanned), not only up to the last row:
            # an event lost in the blocks after the newest row would otherwise go unseen.
            scanned_to = cursors[job][0]
            assert scanned_to is not None and scanned_to >= start, (job, cursors)
            chain_logs = await ctl.logs(address, topic, start, int(scanned_to))
            on_chain = {(log["transactionHash"].lower(), int(log["logIndex"], 16)) for log in chain_logs}
            indexed = {(r[0].lower(), int(r[1])) for r in table_rows if int(r[2]) <= int(scanned_to)}
            assert on_chain, (job, "no event on the chain up to the cursor: the check would prove nothing")
            assert indexed == on_chain, (job, len(indexed), len(on_chain), cursors)
            checked.append(f"{job}: {len(indexed)} rows == chain up to block {scanned_to}")

        # Every confirmed treasury transaction up to the indexed height has rows, and no row is unknown.
        indexed_txids = {r[0] for r in btc_rows}
        top = max((int(r[3]) for r in btc_rows if r[3] is not None), default=-1)
        chain = await ctl.address_chain_txs(env["BLOCKCHAIN_BTC_TREASURY_ADDRESS"])
        known = {t["txid"] for t in chain}
        expected = {t["txid"] for t in chain if int(t["status"]["block_height"]) <= top}
        assert expected, "no treasury transaction indexed: the check would prove nothing"
        assert indexed_txids <= known, indexed_txids - known
        assert expected <= indexed_txids, expected - indexed_txids
        checked.append(f"btc_transaction_indexing: {len(indexed_txids)} txs == chain up to height {top}")

        # Payouts: no payout paid twice on the final chain; every completed one paid as its row says.
        completed = await payouts_paid_once(m.db_url, ctl, env["BLOCKCHAIN_BTC_TREASURY_ADDRESS"])
        assert completed > 0, "no payout completed during the matrix: 'paid once' proved nothing"
        m.rows.append(
            Row("nothing lost/duplicated", business=f"{completed} payouts paid once", jobs="; ".join(checked))
        )
    finally:
        await engine.dispose()
        await ctl.aclose()


@pytest.mark.parametrize("kind", ["hang", "refused"])
async def test_database_fault(matrix: Matrix, tmp_path: Path, kind: str) -> None:
    """A second instance whose database hangs (silent TCP listener) or refuses (closed port)."""
    m = matrix
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(silent_listener()) if kind == "hang" else closed_port()
        # dev: no migrations at startup (test/local would wait for the database before serving).
        env = service_env(
            m.sim, f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nowhere", APP_ENV="dev", INDEX_INTERVAL="1"
        )
        server = stack.enter_context(serve(tmp_path, env))
        row = Row(f"database/{kind}", probed="C")
        m.rows.append(row)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as c:
            await anyio.sleep(1.5)  # the jobs have tried to run
            for path in HEALTH_PATHS:
                row.health[path] = await timed_get(c, path)
            tx = await timed_get(c, "/api/v1/transactions")
            ratio = await timed_get(c, "/api/v1/oracle/icy-btc-ratio-cached")
            jobs_body = row.health["/api/v1/health/jobs"].body
        row.business = f"transactions {tx.status} {tx.error} {tx.ms:.0f}ms; ratio-cached {ratio.status} {ratio.error}"
        row.jobs = f"role={jobs_body.get('role')}"
        for path, t in row.health.items():
            assert t.ms < SLA_MS[path] + SLA_SLACK_MS, (path, t.ms, t.body)
        expected = "timeout" if kind == "hang" else "connection_refused"
        for path in ("/readyz", "/api/v1/health/db"):
            t = row.health[path]
            assert t.status == 503, t.body
            assert t.body["checks"]["database"]["error"] == expected, t.body
        row.check_error = row.health["/api/v1/health/db"].body["checks"]["database"]["error"]
        assert row.health["/healthz"].status == 200
        assert row.health["/api/v1/health/external"].status == 200
        for t in (tx, ratio):
            assert t.ms < 3000, t
            assert_clean_envelope(t)
        assert ratio.status == 503, ratio
        assert tx.status == 503, tx
        assert tx.body["error"] == "database_unavailable", tx
        assert "Traceback" not in server.log()
