"""Secrets sweep (SPEC §2, §4, §5, §12): run the service in prod with recognisable secrets, exercise everything,
then grep every response body and header, ``/metrics`` and the whole INFO log for them.

Secret values (API key, metrics token, WIF, signer key, webhook tokens, endpoint credentials and API-key query
strings) must appear nowhere. Addresses and upstream hosts may legitimately appear in business bodies, so the
treasury and signer addresses and the simulator's ``host:port`` are checked in health bodies, error bodies,
``/metrics`` and (addresses) the log.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from eth_account import Account

from icy_backend.sim.btc_wallet import P2wpkhKey
from jobs.definitions import JOB_NAMES
from tests.e2e.server import REPO, serve
from tests.e2e.stack import HEALTH_PATHS, SimControl, service_env, simulator, wait_for
from tests.pg import drop_database, recreate_database, require_pg, unique_db_name

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

API_KEY = "sweep-API-KEY-5b1e0c9a-XYZZY"
METRICS_TOKEN = "sweep-METRICS-TOKEN-77d2a4-PLUGH"
USERINFO_TOKEN = "sweepUSERINFOtoken4411"
QUERY_TOKEN = "sweepQUERYtoken9d0e"
WEBHOOK_TOKENS = {job: f"sweep-hook-{n}-{job[:6]}-c0ffee" for n, job in enumerate(JOB_NAMES)}
WEBHOOK_ENV = {
    "btc_transaction_indexing": "INDEX_BTC_TRANSACTION_UPTIME_WEBHOOK_URL",
    "icy_transaction_indexing": "INDEX_ICY_TRANSACTION_UPTIME_WEBHOOK_URL",
    "icy_swap_transaction_indexing": "INDEX_ICY_SWAP_TRANSACTION_UPTIME_WEBHOOK_URL",
    "swap_request_processing": "PROCESS_SWAP_REQUESTS_UPTIME_WEBHOOK_URL",
    "btc_pending_transaction_processing": "PROCESS_PENDING_BTC_TRANSACTIONS_UPTIME_WEBHOOK_URL",
}


@contextmanager
def webhook_receiver() -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server recording the paths it is asked for (the uptime webhooks)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Recorder:
    """Every exchange with the service, classified for the scoped checks."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []  # (kind, what, text)

    def add(self, what: str, r: httpx.Response, health: bool = False) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        kind = "health" if health else ("error" if r.status_code >= 400 else "business")
        self.items.append((kind, what, f"{r.status_code}\n{headers}\n\n{r.text}"))

    def texts(self, kinds: set[str] | None = None) -> list[tuple[str, str]]:
        return [(what, text) for kind, what, text in self.items if kinds is None or kind in kinds]


async def test_no_secret_leaves_the_service(tmp_path: Path) -> None:
    require_pg()
    name = unique_db_name("icy_e2e_secrets")
    db_url = await recreate_database(name)
    (tmp_path / "sim").mkdir()
    (tmp_path / "svc").mkdir()
    try:
        with simulator(tmp_path / "sim", block_time=1.0) as sim, webhook_receiver() as (hook_port, hooks):
            await _sweep(tmp_path, sim, db_url, hook_port, hooks)
    finally:
        await drop_database(name)


async def _sweep(tmp_path: Path, sim: Any, db_url: str, hook_port: int, hooks: list[str]) -> None:
    sim_hostport = sim.base_url.removeprefix("http://")
    env = service_env(
        sim,
        db_url,
        APP_ENV="prod",
        LOG_LEVEL="INFO",
        API_KEY=API_KEY,
        METRICS_TOKEN=METRICS_TOKEN,
        UPTIME_WEBHOOK_FAIL_SUFFIX="true",
        UPTIME_WEBHOOK_START="true",
        # prod requires both treasury guards; generous here so that nothing of the sweep is held or deferred.
        BTC_PAYOUT_MAX_SATS="100000000",
        BTC_PAYOUT_DAILY_LIMIT_SATS="1000000000",
        # prod defaults are mainnet / Base; the simulator serves testnet / Base Sepolia.
        BTC_NETWORK=sim.env["BTC_NETWORK"],
        BLOCKCHAIN_CHAIN_ID=sim.env["BLOCKCHAIN_CHAIN_ID"],
        BTC_BLOCKSTREAM_API_URL=f"http://esplora:{USERINFO_TOKEN}@{sim_hostport}/esplora",
        BLOCKCHAIN_BASE_RPC_ENDPOINT=f"http://{sim_hostport}/evm?apikey={QUERY_TOKEN}",
        COINGECKO_API_URL=f"http://cg:{USERINFO_TOKEN}@{sim_hostport}/coingecko",
        MOCHI_PAY_API_URL=f"http://mochi:{USERINFO_TOKEN}@{sim_hostport}/mochi",
        **{WEBHOOK_ENV[job]: f"http://127.0.0.1:{hook_port}/ping/{token}" for job, token in WEBHOOK_TOKENS.items()},
    )
    signer_key = sim.env["BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY"]
    secrets = {
        "API_KEY": API_KEY,
        "METRICS_TOKEN": METRICS_TOKEN,
        "userinfo token": USERINFO_TOKEN,
        "query token": QUERY_TOKEN,
        "BTC_WALLET_WIF": sim.env["BTC_WALLET_WIF"],
        "signer key": signer_key.removeprefix("0x"),
        **{f"webhook token {job}": token for job, token in WEBHOOK_TOKENS.items()},
    }
    signer_address = Account.from_key(signer_key).address
    addresses = {
        "treasury address": sim.env["BLOCKCHAIN_BTC_TREASURY_ADDRESS"],
        "signer address": signer_address,
        "signer address (lower)": signer_address.lower(),
    }
    user_address = P2wpkhKey.from_seed(b"secrets sweep user", "test").address
    # prod does not migrate at startup: `icy-backend migrate` first, like a deploy would.
    migrate = subprocess.run(
        [sys.executable, "-m", "icy_backend.cli", "migrate"],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    rec = Recorder()
    rec.items.append(("log", "migrate output", migrate.stdout + migrate.stderr))
    ctl = SimControl(sim)
    try:
        with serve(tmp_path / "svc", env, ready_path="/readyz") as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as c:
                await _exercise(c, rec, user_address)
                # Jobs run and ping their webhooks (the URLs hold the tokens).
                assert await wait_for(lambda: _all_pinged(hooks), timeout=20), hooks
                # A faulted upstream: errors, breaker transitions, failed jobs, /fail pings — all logged.
                external_at = time.monotonic()
                await ctl.set_fault("esplora", status=500)
                await ctl.set_fault("base_rpc", reset=True)
                await ctl.set_fault("mochi_pay", malformed=True)
                for _ in range(4):
                    for path in ("/api/v1/oracle/treasury-btc", "/api/v1/oracle/circulated-icy", "/api/v1/swap/info"):
                        rec.add(f"faulted {path}", await c.get(path, headers={"Authorization": API_KEY}))
                assert await wait_for(lambda: _any_fail_ping(hooks), timeout=15), hooks
                await anyio.sleep(max(0.0, external_at + 10.3 - time.monotonic()))
                # Past the TTL the first probe answers from the last result and starts one refresh (SPEC §5
                # stale-while-revalidate); the faulted result shows one refresh (≤ 1.5 s deadline) later.
                rec.add("stale external", await c.get("/api/v1/health/external"), health=True)
                await anyio.sleep(2.0)
                r = await c.get("/api/v1/health/external")
                assert r.status_code == 503
                rec.add("faulted external", r, health=True)
                rec.add("faulted jobs", await c.get("/api/v1/health/jobs"), health=True)
                await ctl.clear()
                r = await c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                assert r.status_code == 200
                rec.items.append(("metrics", "/metrics", r.text))
            log = server.log()
    finally:
        await ctl.aclose()

    assert len(log) > 1000 and ("INFO" in log or '"level": "info"' in log), log[:2000]
    everything = [*rec.texts(), ("server log", log)]
    leaks = [(what, label) for what, text in everything for label, value in secrets.items() if value in text]
    assert not leaks, leaks
    scoped = [*rec.texts({"health", "error", "metrics"}), ("server log", log)]
    leaks = [(what, label) for what, text in scoped for label, value in addresses.items() if value in text]
    assert not leaks, leaks
    bodies = rec.texts({"health", "error", "metrics"})
    leaks = [
        (what, marker) for what, text in bodies for marker in (sim_hostport, "127.0.0.1", "Traceback") if marker in text
    ]
    assert not leaks, leaks
    print(f"secrets sweep: {len(rec.items)} responses, {len(log)} log bytes, {len(hooks)} webhook pings, no leak")


def _pinged(hooks: list[str], token: str, fail: bool = False) -> bool:
    # Pings carry ``?rid=<uuid4>`` (SPEC §8): the /fail suffix is on the path, before the query. Start pings
    # (UPTIME_WEBHOOK_START) are neither a success nor a failure.
    paths = [urlsplit(path).path for path in hooks if token in path]
    return any(p.endswith("/fail") == fail and not p.endswith("/start") for p in paths)


async def _all_pinged(hooks: list[str]) -> bool:
    started = all(
        any(token in p and urlsplit(p).path.endswith("/start") for p in hooks) for token in WEBHOOK_TOKENS.values()
    )
    return started and all(_pinged(hooks, token) for token in WEBHOOK_TOKENS.values())


async def _any_fail_ping(hooks: list[str]) -> bool:
    return any(_pinged(hooks, token, fail=True) for token in WEBHOOK_TOKENS.values())


async def _exercise(c: httpx.AsyncClient, rec: Recorder, user_address: str) -> None:
    """Every route of the OpenAPI document with and without the API key, plus the error paths."""
    good = {"Authorization": API_KEY}
    variants: list[tuple[str, dict[str, str]]] = [
        ("no key", {}),
        ("key", good),
        ("ApiKey key", {"Authorization": f"ApiKey {API_KEY}"}),
        ("wrong key", {"Authorization": "ApiKey not-the-key"}),
    ]
    doc = await c.get("/openapi.json")
    rec.add("/openapi.json", doc)
    paths: dict[str, Any] = doc.json()["paths"] if doc.status_code == 200 else {}
    gets = [p for p, ops in paths.items() if "get" in ops and "{" not in p] or [
        *HEALTH_PATHS,
        "/livez",
        "/metrics",
        "/api/v1/oracle/circulated-icy",
        "/api/v1/oracle/treasury-btc",
        "/api/v1/oracle/icy-btc-ratio",
        "/api/v1/oracle/icy-btc-ratio-cached",
        "/api/v1/swap/info",
        "/api/v1/transactions",
        "/docs",
    ]
    for path in gets:
        for label, headers in variants:
            rec.add(f"GET {path} ({label})", await c.get(path, headers=headers), health=path in HEALTH_PATHS)
    for path in HEALTH_PATHS:
        rec.add(f"{path} health+json", await c.get(path, headers={"Accept": "application/health+json"}), health=True)
    rec.add("readyz verbose", await c.get("/readyz?verbose&exclude=database&exclude=nope"), health=True)
    rec.add("metrics bearer", await c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}))
    rec.add("metrics wrong bearer", await c.get("/metrics", headers={"Authorization": "Bearer nope"}))
    signature_body = {"icy_amount": "20000000000000000000", "btc_address": user_address, "btc_amount": "4000"}
    swap_body = {"icy_amount": "20000000000000000000", "btc_address": user_address, "icy_tx": "0x" + "ab" * 32}
    for label, headers in variants:
        rec.add(
            f"sign ({label})", await c.post("/api/v1/swap/generate-signature", json=signature_body, headers=headers)
        )
        rec.add(f"swap ({label})", await c.post("/api/v1/swap", json=swap_body, headers=headers))
    for body in (b"{not json", b'{"icy_amount": 5}', b"[]"):
        rec.add("bad sign body", await c.post("/api/v1/swap/generate-signature", content=body))
        rec.add("bad swap body", await c.post("/api/v1/swap", content=body, headers=good))
    rec.add("413", await c.post("/api/v1/swap/generate-signature", content=b"x" * 70_000))
    rec.add("405", await c.delete("/healthz"))
    rec.add("404", await c.get("/nope/../etc", headers=good))
    rec.add("404 no key", await c.get("/api/v1/nope"))
    for query in ("limit=0", "limit=abc", "offset=-1", f"btc_address={user_address}", "status=pending&limit=100"):
        rec.add(f"transactions {query}", await c.get(f"/api/v1/transactions?{query}"))
