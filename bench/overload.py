"""Probes under load (SPEC §5 overload, §12): open-loop /healthz latency, and probes next to a saturated route.

    .venv/bin/python -m bench.overload [--seconds 20]

Starts the simulator and one service process (bench.load's ``own_service``: PostgreSQL, jobs every 2 min, pinned
to CPU 0; this process and wrk run on the other CPU), then:

1. capacity: a closed loop of 50 connections on ``/healthz`` (wrk when installed, else the in-process generator);
2. open loop on ``/healthz`` at half that capacity: requests are sent on a fixed schedule whatever the answers do,
   and each latency is measured from the request's *scheduled* time (no coordinated omission). Goal: p99 ≤ 20 ms;
3. 300 closed-loop connections on ``/api/v1/swap/info`` while a prober asks ``/readyz`` and ``/livez`` every
   100 ms, each on a new connection with a 1 s timeout (as the kubelet does). Goals: every ``/readyz`` answer 200,
   ``/livez`` p99 ≤ 250 ms. Business requests past ``MAX_CONCURRENT_REQUESTS`` (64) are refused with 503.

Records ``bench/results/overload.json``. Loopback only, bounded in time and requests.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.load import _RawConnection, have_wrk, own_service, parse_wrk, raw_load
from bench.record import record

BENCH_DB = "icy_bench_overload"
SWAP_INFO = "/api/v1/swap/info"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _pin_self_off_cpu0() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, set(cpus[1:]))


def capacity(base_url: str, seconds: float) -> dict[str, Any]:
    """Closed loop, 50 connections, /healthz: the throughput one process sustains."""
    if have_wrk():
        cmd = ["wrk", "-t1", "-c50", f"-d{max(1, round(seconds))}s", "--latency", base_url + "/healthz"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
        result = parse_wrk("/healthz", out, seconds)
    else:
        result = anyio.run(
            lambda: raw_load(base_url, "/healthz", seconds=seconds, connections=50, max_requests=100_000)
        )
    return {"generator": result.generator, "rps": round(result.rps, 1), "errors": result.errors}


async def open_loop(base_url: str, path: str, rate: float, seconds: float, connections: int = 32) -> dict[str, Any]:
    """``rate`` requests per second on a fixed schedule over ``connections`` keep-alive connections (wrk2's model):
    each latency is measured from the request's *scheduled* send time, so a request that had to wait for a free
    connection counts its wait (no coordinated omission)."""
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    next_index = 0
    start = time.perf_counter() + 0.1

    async def worker() -> None:
        nonlocal errors, next_index
        conn = _RawConnection(host, port)
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                scheduled = start + i / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                try:
                    with anyio.fail_after(5):
                        status = await conn.get(path)
                    if status != 200:
                        errors += 1
                except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, ValueError):
                    errors += 1
                    await conn.aclose()
                latencies.append(time.perf_counter() - scheduled)
        finally:
            await conn.aclose()

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(worker)
    elapsed = time.perf_counter() - start
    return {
        "rate": round(rate, 1),
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "seconds": seconds,
        "connections": connections,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(pct(latencies, 0.5) * 1000, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
    }


async def _probe(host: str, port: int, path: str) -> tuple[float, int]:
    """One kubelet-style probe: a new connection, one GET, 1 s timeout (status 0 = timed out / failed)."""
    conn = _RawConnection(host, port)
    start = time.perf_counter()
    try:
        with anyio.fail_after(1.0):
            status = await conn.get(path)
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, ValueError):
        status = 0
    finally:
        await conn.aclose()
    return (time.perf_counter() - start) * 1000, status


async def probes_next_to_load(base_url: str, seconds: float, connections: int) -> dict[str, Any]:
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    readyz: list[tuple[float, int]] = []
    livez: list[tuple[float, int]] = []
    load: dict[str, Any] = {}

    async def run_load() -> None:
        if have_wrk():
            cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
            cmd += ["--latency", base_url + SWAP_INFO]
            done = await anyio.run_process(cmd, check=True)
            result = parse_wrk(SWAP_INFO, done.stdout.decode(), seconds)
        else:
            result = await raw_load(base_url, SWAP_INFO, seconds=seconds, connections=connections, max_requests=200_000)
        load.update(
            generator=result.generator,
            connections=connections,
            rps=round(result.rps, 1),
            requests=result.requests,
            non_2xx=result.non_2xx,
            p50_ms=round(result.p50_ms, 1),
            p99_ms=round(result.p99_ms, 1),
            socket_errors=result.errors - result.non_2xx,
        )

    async def prober() -> None:
        await anyio.sleep(1.0)  # let the load ramp up
        stop = time.perf_counter() + seconds - 2.0
        while time.perf_counter() < stop:
            readyz.append(await _probe(host, port, "/readyz"))
            livez.append(await _probe(host, port, "/livez"))
            await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_load)
        tg.start_soon(prober)
    ok = sum(1 for _, status in readyz if status == 200)
    return {
        "load": load,
        "readyz": {
            "probes": len(readyz),
            "ok_200": ok,
            "share_200": round(ok / len(readyz), 4) if readyz else None,
            "statuses": sorted({s for _, s in readyz}),
            "p99_ms": round(pct([ms for ms, _ in readyz], 0.99), 1),
        },
        "livez": {
            "probes": len(livez),
            "p50_ms": round(pct([ms for ms, _ in livez], 0.5), 1),
            "p99_ms": round(pct([ms for ms, _ in livez], 0.99), 1),
            "max_ms": round(max(ms for ms, _ in livez), 1) if livez else None,
            "statuses": sorted({s for _, s in livez}),
        },
    }


def _refused(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    match = re.search(r'^icy_backend_requests_refused_total\{reason="overloaded"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=300, help="closed loop on swap/info")
    args = parser.parse_args()
    seconds = max(5.0, min(args.seconds, 40.0))
    from tests.pg import drop_database, recreate_database, require_pg

    require_pg()
    _pin_self_off_cpu0()
    with tempfile.TemporaryDirectory(prefix="icy-bench-overload-") as tmp_name:
        db_url = anyio.run(recreate_database, BENCH_DB)
        try:
            # Jobs at the production interval (2 min): they run once at startup, not every 5 s as in bench.load.
            with own_service(Path(tmp_name), db_url, INDEX_INTERVAL="120") as base_url:
                cap = capacity(base_url, seconds / 2)
                print("capacity (closed loop, 50 connections, /healthz):", cap)
                half = anyio.run(open_loop, base_url, "/healthz", cap["rps"] / 2, seconds)
                print("open loop at half capacity:", half)
                # A lower point: where the open loop holds on this machine (the generator shares a CPU too).
                quarter = anyio.run(open_loop, base_url, "/healthz", cap["rps"] / 4, seconds / 2)
                print("open loop at a quarter of capacity:", quarter)
                refused_before = _refused(base_url)
                overload = anyio.run(probes_next_to_load, base_url, seconds, args.connections)
                overload["refused_overloaded"] = _refused(base_url) - refused_before
                print("probes next to", args.connections, "connections on", SWAP_INFO, ":", overload)
        finally:
            anyio.run(drop_database, BENCH_DB)
    load1, load5, _ = os.getloadavg()
    results = {
        "capacity_healthz": cap,
        "open_loop_healthz_half_capacity": half,
        "open_loop_healthz_quarter_capacity": quarter,
        "closed_loop_swap_info_probes": overload,
        "goals": {"healthz_p99_ms": 20, "readyz_share_200": 1.0, "livez_p99_ms": 250},
        "loadavg_1m_5m_after": [round(load1, 2), round(load5, 2)],
    }
    ready = overload["readyz"]
    headline = (
        f"/healthz open loop at half capacity ({half['rate']:.0f} of {cap['rps']:.0f} req/s):"
        f" p99 {half['p99_ms']:.1f} ms (goal 20; achieved {half['achieved_rps']:.0f} req/s),"
        f" at a quarter {quarter['p99_ms']:.1f} ms; {args.connections} connections on {SWAP_INFO}:"
        f" /readyz {ready['ok_200']}/{ready['probes']} 200"
        f" (goal all), /livez p99 {overload['livez']['p99_ms']:.0f} ms (goal 250),"
        f" {overload['refused_overloaded']:.0f} business requests refused as overloaded"
    )
    record(
        "overload",
        results,
        headline=headline,
        notes="one hypercorn process pinned to CPU 0, generator and wrk on CPU 1; probes on new connections, "
        "1 s timeout, every 100 ms; the machine is shared (load average recorded)",
    )


if __name__ == "__main__":
    main()
