"""HTTP instrumentation overhead, measured in one run and reported as ratios.

Run (from the repo root, ~2-3 minutes, loopback only):

    .venv/bin/python -m bench.http_overhead            # all three parts
    .venv/bin/python -m bench.http_overhead --quick    # fewer rounds, shorter loads (a smoke run)

(a) in-process CPU per request: the same small JSON route driven straight through each ASGI app with an in-memory
    receive/send (no network), ``time.process_time`` over N requests, interleaved rounds, medians.
(b) over loopback: each variant served by hypercorn (one subprocess each, pinned to CPU 0 when there are >= 2
    CPUs) and loaded by ``wrk`` (pinned to the other CPUs) if it is installed, else by an async httpx client with a
    fixed request count and concurrency; throughput and p99, interleaved rounds, medians, ratios vs bare.
(c) ``/metrics`` render CPU time with 2000 series (prometheus-client's encoders vs ours, and the endpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.record import record
from bench.variants import API_KEY, PATH, VARIANTS, stack_description

HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"user-agent", b"bench"),
    (b"accept", b"application/json"),
    (b"authorization", API_KEY.encode()),
]
PAIRS = [  # (variant, its baseline)
    ("starlette_metrics", "starlette_bare"),
    ("starlette_stack", "starlette_bare"),
    ("starlette_exporter", "starlette_bare"),
    ("fastapi_instrumentator", "fastapi_bare"),
    ("raw_metrics", "raw_bare"),
]


# ---------------------------------------------------------------------------------------------- (a) in-process


async def _drive(app: Any, n: int) -> list[int]:
    statuses: list[int] = []
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and len(statuses) < 1:
            statuses.append(message["status"])

    base = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    for _ in range(n):
        scope = dict(base)  # fresh scope per request: routers and middleware write into it
        scope["headers"] = list(HEADERS)
        await app(scope, receive, send)
    return statuses


def in_process(rounds: int, n: int) -> dict[str, float]:
    """Median CPU µs per request per variant."""
    apps = {name: build() for name, build in VARIANTS.items()}
    loop = asyncio.new_event_loop()
    try:
        for name, app in apps.items():  # warm up (builds middleware stacks, caches children) and check 200
            statuses = loop.run_until_complete(_drive(app, 200))
            if statuses != [200]:
                raise SystemExit(f"{name}: warm-up answered {statuses}, expected 200")
        samples: dict[str, list[float]] = {name: [] for name in apps}
        order = list(apps)
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                start = time.process_time()
                loop.run_until_complete(_drive(apps[name], n))
                samples[name].append((time.process_time() - start) / n * 1e6)
    finally:
        loop.close()
    return {name: statistics.median(v) for name, v in samples.items()}


# ---------------------------------------------------------------------------------------------- (b) loopback

LOOPBACK_VARIANTS = [
    "starlette_bare",
    "starlette_metrics",
    "starlette_stack",
    "starlette_exporter",
    "fastapi_bare",
    "fastapi_instrumentator",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(variant: str, port: int) -> None:
    """Child process: serve one variant with hypercorn on 127.0.0.1:port until killed."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    if _cpus() >= 2:
        os.sched_setaffinity(0, {0})
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 60
    asyncio.run(hypercorn_serve(VARIANTS[variant](), config))  # type: ignore[arg-type]


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


@dataclass
class Load:
    rps: float
    p99_ms: float


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(url: str, seconds: float, connections: int) -> Load:
    cpus = _cpus()
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-H",
        f"Authorization: {API_KEY}",
        url,
    ]
    pin: Callable[[], None] | None = (lambda: os.sched_setaffinity(0, set(range(1, cpus)))) if cpus >= 2 else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=pin).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    assert m is not None, out
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    return Load(rps, float(m.group(1)) * _WRK_UNITS[m.group(2)])


def _httpx_load(url: str, requests: int, concurrency: int) -> Load:
    import httpx

    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            t = time.perf_counter()
            r = await client.get(url, headers={"Authorization": API_KEY})
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise SystemExit(f"{url} answered {r.status_code}")

    async def main() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            start = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for _ in range(concurrency):
                    tg.create_task(worker(client, requests // concurrency))
            return time.perf_counter() - start

    elapsed = asyncio.run(main())
    latencies.sort()
    return Load(len(latencies) / elapsed, latencies[int(len(latencies) * 0.99) - 1] * 1e3)


def loopback(rounds: int, seconds: float, connections: int, requests: int, use_wrk: bool) -> dict[str, Load]:
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name in LOOPBACK_VARIANTS:
            port = _free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.http_overhead", "--serve", name, "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs[name] = (proc, port)
        for proc, port in procs.values():
            _wait_listening(port, proc)

        def load(name: str, secs: float, count: int) -> Load:
            url = f"http://127.0.0.1:{procs[name][1]}{PATH}"
            return _wrk(url, secs, connections) if use_wrk else _httpx_load(url, count, connections)

        for name in LOOPBACK_VARIANTS:  # warm-up
            load(name, 1, max(connections, requests // 10))
        results: dict[str, list[Load]] = {name: [] for name in LOOPBACK_VARIANTS}
        order = list(LOOPBACK_VARIANTS)
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                results[name].append(load(name, seconds, requests))
    finally:
        for proc, _port in procs.values():
            proc.terminate()
        for proc, _port in procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {
        name: Load(statistics.median(x.rps for x in v), statistics.median(x.p99_ms for x in v))
        for name, v in results.items()
    }


# ---------------------------------------------------------------------------------------------- (c) /metrics


def render(repeats: int) -> list[tuple[str, int, int, list[float]]]:
    """(case, series, exposition bytes, [library text, ours text, library OM, ours OM, ours text+gzip, endpoint] ms)."""
    from icy_backend.metrics import Metrics

    def counter_2000(m: Metrics) -> None:  # 2000 series of one prometheus-client counter
        for i in range(2000):
            m.external_calls.labels(f"api_{i}", "success").inc()

    def http_mix(m: Metrics) -> None:  # 77 label sets x (14 duration + 1 requests + 11 size) = 2002 series
        for i in range(77):
            m.http_collector.series("GET", f"/route/{i}", "200").observe(0.01, 300)

    def histogram_2000(m: Metrics) -> None:  # 2000 label sets x 14 = 28000 series of a prometheus-client histogram
        for i in range(2000):
            m.external_duration.labels("api", f"op_{i}", "success").observe(0.01)

    return [
        _render_case("counter, 2000 sets", 2000, counter_2000, repeats),
        _render_case("HTTP mix, 77 sets", 2002, http_mix, repeats),
        _render_case("histogram, 2000 sets", 28000, histogram_2000, max(3, repeats // 3)),
    ]


def _render_case(case: str, series: int, fill: Any, repeats: int) -> tuple[str, int, int, list[float]]:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest
    from starlette.requests import Request

    from icy_backend.metrics import Metrics, make_registry
    from icy_backend.metrics.endpoint import metrics_endpoint
    from icy_backend.metrics.exposition import generate_openmetrics, generate_text

    metrics = Metrics(make_registry())
    fill(metrics)
    registry = metrics.registry

    def timed(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            # CPU time: on a shared machine wall time measures the neighbours; the endpoint's worker thread counts
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        return statistics.median(times) * 1e3

    endpoint = metrics_endpoint(metrics, None)

    async def call_endpoint() -> None:
        scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [], "query_string": b""}
        await endpoint(Request(scope))

    loop = asyncio.new_event_loop()
    try:
        times = [
            timed(lambda: generate_latest(registry)),
            timed(lambda: generate_text(registry)),
            timed(lambda: om_latest(registry)),
            timed(lambda: generate_openmetrics(registry)),
            timed(lambda: gzip.compress(generate_text(registry), compresslevel=5)),
            timed(lambda: loop.run_until_complete(call_endpoint())),
        ]
    finally:
        loop.close()
    return case, series, len(generate_text(registry)), times


# ---------------------------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx load generator even if wrk exists")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    quick = args.quick
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    started = time.monotonic()
    print(f"python {sys.version.split()[0]}, {_cpus()} CPUs; full stack = {stack_description()}")

    rounds, n = (3, 1000) if quick else (9, 3000)
    print(f"\n(a) in-process CPU per request: {rounds} interleaved rounds x {n} requests, medians")
    cpu = in_process(rounds, n)
    print(f"  {'variant':<24}{'µs/req':>9}")
    for name, us in cpu.items():
        print(f"  {name:<24}{us:>9.1f}")
    print(f"  {'variant / baseline':<46}{'CPU ratio':>10}{'+µs/req':>9}")
    for name, base in PAIRS:
        print(f"  {name + ' / ' + base:<46}{cpu[name] / cpu[base]:>10.3f}{cpu[name] - cpu[base]:>9.1f}")

    conns = 50
    l_rounds, secs, count = (1, 2.0, 2000) if quick else (3, 4.0, 6000)
    gen = f"wrk -t1 -c{conns} -d{secs:.0f}s" if use_wrk else f"httpx, {count} requests at concurrency {conns}"
    print(f"\n(b) hypercorn over loopback ({gen}; {l_rounds} interleaved rounds, medians)")
    loads = loopback(l_rounds, secs, conns, count, use_wrk)
    print(f"  {'variant':<24}{'req/s':>10}{'p99 ms':>9}{'thr. ratio':>12}{'cost':>8}{'p99 ratio':>11}")
    for name, ld in loads.items():
        base = "fastapi_bare" if name.startswith("fastapi") else "starlette_bare"
        ratio = ld.rps / loads[base].rps
        print(
            f"  {name:<24}{ld.rps:>10.0f}{ld.p99_ms:>9.2f}{ratio:>12.3f}{1 - ratio:>8.1%}"
            f"{ld.p99_ms / loads[base].p99_ms:>11.2f}"
        )

    print("\n(c) /metrics render, fresh Metrics + process/platform/GC collectors; medians of CPU ms")
    print("    lib = prometheus-client generate_latest, ours = icy_backend.metrics.exposition; endpoint = ours, text")
    head = ["lib text", "ours text", "lib OM", "ours OM", "ours+gz", "endpoint"]
    print(f"  {'case':<22}{'series':>7}{'bytes':>9}" + "".join(f"{h:>10}" for h in head))
    for case, series, size, times in render(5 if quick else 15):
        print(f"  {case:<22}{series:>7}{size:>9}" + "".join(f"{t:>10.1f}" for t in times))
    print(f"\ntotal {time.monotonic() - started:.0f} s")

    def throughput_ratio(name: str) -> float:
        base = "fastapi_bare" if name.startswith("fastapi") else "starlette_bare"
        return round(loads[name].rps / loads[base].rps, 3)

    cpu_added = {name: round(cpu[name] - cpu[base], 2) for name, base in PAIRS}
    throughput = {name: throughput_ratio(name) for name in loads}
    headline = (
        f"throughput under hypercorn relative to the bare app: full stack {throughput['starlette_stack']:.3f} "
        f"(goal ≥ 0.90), starlette-exporter {throughput['starlette_exporter']:.3f}, "
        f"prometheus-fastapi-instrumentator {throughput['fastapi_instrumentator']:.3f}; in-process CPU added: "
        f"full stack +{cpu_added['starlette_stack']:.1f} µs, metrics +{cpu_added['starlette_metrics']:.1f} µs, "
        f"starlette-exporter +{cpu_added['starlette_exporter']:.1f} µs, "
        f"instrumentator +{cpu_added['fastapi_instrumentator']:.1f} µs"
    )
    record(
        "http_overhead" + ("_quick" if quick else ""),
        {
            "in_process_us_per_request": {k: round(v, 2) for k, v in cpu.items()},
            "in_process_us_added": cpu_added,
            "loopback": {n: {"rps": round(ld.rps, 1), "p99_ms": round(ld.p99_ms, 2)} for n, ld in loads.items()},
            "loopback_throughput_ratio": throughput,
            "loopback_generator": gen,
            "full_stack": stack_description(),
        },
        headline=headline,
        notes="(a) interleaved rounds, medians of CPU time; (b) one hypercorn process per variant pinned to CPU 0, "
        "load on the other CPU, interleaved rounds, medians; the machine is shared with other work",
    )


if __name__ == "__main__":
    main()
