"""p50/p99 of every health endpoint with healthy dependencies, then with **every** dependency hanging (SPEC §5, §12).

    .venv/bin/python -m bench.health_latency [--seconds 30]

Starts ``icy-backend simulate`` and ``icy-backend serve`` (APP_ENV=test, SANDBOX=off, jobs every 5 s) on loopback,
with PostgreSQL reached through a freezable TCP proxy (tests/jobs/tcp_proxy.py) and the service pinned to CPU 0.
Phase 1: healthy dependencies. Phase 2: every simulated upstream hangs (Esplora, Base RPC, CoinGecko, Mochi Pay)
and the database connection freezes (the proxy holds every byte, sockets stay open: a partition). Each endpoint
is asked once (the "first answer", which may wait for a check deadline), then for ``--seconds`` the endpoints are
probed round-robin with a 10 ms pause (over several result-cache TTLs, so refreshes happen during the run), while
a second client probes the live ``/api/v1/health/db`` back to back. Goal (SPEC §5): p99 ≤ 50 ms on every endpoint
once it has a result, ``/api/v1/health/db`` ≤ 500 ms. Records ``bench/results/health_latency.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx

from bench.load import pin_to_first_cpu
from bench.record import record

BENCH_DB = "icy_bench_health"
ROUND_ROBIN = ("/healthz", "/livez", "/readyz", "/api/v1/health/external", "/api/v1/health/jobs")
LIVE = "/api/v1/health/db"
GOAL_MS = {path: 50.0 for path in ROUND_ROBIN} | {LIVE: 500.0}
PREFIXES = ("/esplora", "/evm", "/coingecko", "/mochi")
PAUSE = 0.01


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _summary(times: list[float], codes: dict[int, int]) -> dict[str, Any]:
    return {
        "requests": len(times),
        "p50_ms": round(statistics.median(times), 2) if times else None,
        "p99_ms": round(pct(times, 0.99), 2),
        "max_ms": round(max(times), 2) if times else None,
        "status_counts": {str(k): v for k, v in sorted(codes.items())},
    }


def _timed(client: httpx.Client, path: str) -> tuple[float, int]:
    start = time.perf_counter()
    code = client.get(path).status_code
    return (time.perf_counter() - start) * 1000, code


def measure(base_url: str, seconds: float) -> dict[str, dict[str, Any]]:
    """Round-robin over the cached/in-memory endpoints, and /api/v1/health/db back to back in a second thread."""
    times: dict[str, list[float]] = {p: [] for p in (*ROUND_ROBIN, LIVE)}
    codes: dict[str, dict[int, int]] = {p: {} for p in (*ROUND_ROBIN, LIVE)}
    stop = time.monotonic() + seconds

    def live() -> None:
        with httpx.Client(base_url=base_url, timeout=5) as client:
            while time.monotonic() < stop:
                ms, code = _timed(client, LIVE)
                times[LIVE].append(ms)
                codes[LIVE][code] = codes[LIVE].get(code, 0) + 1
                time.sleep(PAUSE)

    thread = threading.Thread(target=live)
    thread.start()
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < stop:
            for path in ROUND_ROBIN:
                ms, code = _timed(client, path)
                times[path].append(ms)
                codes[path][code] = codes[path].get(code, 0) + 1
                time.sleep(PAUSE)
    thread.join()
    return {path: _summary(times[path], codes[path]) for path in times}


def _print(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'endpoint':26} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'goal':>6}  status")
    for path, r in rows.items():
        print(
            f"  {path:26} {r['requests']:5} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f}"
            f" {GOAL_MS[path]:6.0f}  {r['status_counts']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="per phase (default: %(default)s)")
    args = parser.parse_args()
    seconds = max(5.0, min(args.seconds, 60.0))

    from tests.e2e.server import serve
    from tests.e2e.stack import service_env, simulator
    from tests.jobs.tcp_proxy import freezable_proxy
    from tests.pg import drop_database, recreate_database, require_pg

    require_pg()
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="icy-bench-health-") as tmp_name,
        anyio.from_thread.start_blocking_portal() as portal,
    ):
        tmp = Path(tmp_name)
        url = portal.call(recreate_database, BENCH_DB)
        try:
            with portal.wrap_async_context_manager(freezable_proxy("127.0.0.1", 5432)) as proxy:
                proxied = httpx.URL(url.replace("postgresql+asyncpg", "http")).copy_with(port=proxy.port)
                db_url = str(proxied).replace("http://", "postgresql+asyncpg://", 1)
                (tmp / "sim").mkdir()
                (tmp / "svc").mkdir()
                with simulator(tmp / "sim", block_time=2.0) as sim:
                    env = service_env(sim, db_url, INDEX_INTERVAL="5", LOG_LEVEL="ERROR")
                    with serve(tmp / "svc", env, ready_path="/readyz") as server:
                        pin_to_first_cpu(server.process.pid)
                        base = server.base_url
                        with httpx.Client(base_url=base, timeout=10) as client:
                            for path in (*ROUND_ROBIN, LIVE):  # a result in every cache
                                client.get(path)
                        healthy = measure(base, seconds / 2)
                        _print(f"healthy dependencies, {seconds / 2:.0f} s", healthy)
                        with httpx.Client(base_url=sim.url(""), timeout=5) as control:
                            for prefix in PREFIXES:
                                r = control.put(f"{prefix}/_sim/faults", json={"path": "*", "hang": True})
                                r.raise_for_status()
                        portal.call(proxy.freeze)
                        first: dict[str, Any] = {}
                        with httpx.Client(base_url=base, timeout=10) as client:
                            for path in (*ROUND_ROBIN, LIVE):
                                ms, code = _timed(client, path)
                                first[path] = {"ms": round(ms, 1), "status": code}
                        print("\nevery dependency hanging, first answer:", first)
                        hanging = measure(base, seconds)
                        _print(f"every dependency hanging (database frozen), {seconds:.0f} s", hanging)
                        portal.call(proxy.thaw)
                        with httpx.Client(base_url=sim.url(""), timeout=5) as control:
                            for prefix in PREFIXES:
                                with contextlib.suppress(httpx.HTTPError):
                                    control.delete(f"{prefix}/_sim/faults")
        finally:
            portal.call(drop_database, BENCH_DB)
    worst = max(hanging[p]["p99_ms"] for p in ROUND_ROBIN)
    results = {
        "seconds_per_phase": {"healthy": seconds / 2, "hanging": seconds},
        "healthy": healthy,
        "hanging_first_answer": first,
        "hanging": hanging,
        "hanging_worst_p99_ms_except_db": worst,
        "goal_ms": GOAL_MS,
    }
    headline = (
        f"every dependency hanging (4 upstreams + frozen PostgreSQL), after the first answer: p99 ≤ {worst:.1f} ms on "
        f"{', '.join(ROUND_ROBIN)} (goal 50); /api/v1/health/db p99 {hanging[LIVE]['p99_ms']:.0f} ms (goal 500)"
    )
    record(
        "health_latency",
        results,
        headline=headline,
        notes="hypercorn, one process pinned to CPU 0; sequential httpx clients in the bench process; "
        "stale-while-revalidate result caches (readyz TTL 1 s / max_stale 5 s, external 10 s / 60 s)",
    )


if __name__ == "__main__":
    main()
