"""Load on the health, metrics and cached-oracle endpoints of the real service (issue 10, SPEC §5/§12).

    .venv/bin/python -m bench.load                      # 30 s per endpoint, 200 connections, wrk if installed
    .venv/bin/python -m bench.load --seconds 5          # shorter run (what tests/e2e/test_load.py does)
    .venv/bin/python -m bench.load --no-wrk             # force the bounded in-process (anyio) load generator
    .venv/bin/python -m bench.load --url http://127.0.0.1:8080   # an already running service

Without ``--url`` it starts ``icy-backend simulate`` and ``icy-backend serve`` (APP_ENV=test, SANDBOX=off,
PostgreSQL database ``icy_bench_load`` when 127.0.0.1:5432 answers, else SQLite) on free loopback ports, and pins
the service to CPU 0 and wrk to the other CPUs when there are at least two. Prints throughput, p50 and p99 per
endpoint and the error counts. The in-process generator runs in this process on the same machine: on 2 cores it
competes with the server for CPU, so its figures are pessimistic; prefer wrk (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

BENCH_DB = "icy_bench_load"
ENDPOINTS: tuple[str, ...] = (
    "/healthz",
    "/readyz",
    "/api/v1/health/db",
    "/api/v1/health/external",
    "/api/v1/health/jobs",
    "/metrics",
    "/api/v1/oracle/icy-btc-ratio-cached",
)
# p99 bounds (ms): the SLAs of SPEC §5; /metrics and the oracle route have none (reported only).
P99_SLA_MS: dict[str, float] = {
    "/healthz": 200,
    "/readyz": 500,
    "/api/v1/health/db": 500,
    "/api/v1/health/external": 2000,
    "/api/v1/health/jobs": 100,
}


@dataclass
class LoadResult:
    endpoint: str
    generator: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers + socket errors (connect/read/write/timeout) or client exceptions
    detail: str = ""
    non_2xx: int = 0

    def line(self) -> str:
        sla = P99_SLA_MS.get(self.endpoint)
        bound = f"{sla:.0f}" if sla is not None else "-"
        return (
            f"{self.endpoint:<38} {self.rps:>9.0f} {self.p50_ms:>8.1f} {self.p99_ms:>8.1f} {bound:>7}"
            f" {self.errors:>6} {self.non_2xx:>7} {self.requests:>8}  {self.generator}"
        )


HEADER = (
    f"{'endpoint':<38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99 SLA':>7} {'errors':>6} {'non-2xx':>7}"
    f" {'requests':>8}"
)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(endpoint: str, out: str, seconds: float) -> LoadResult:
    """Parse ``wrk --latency`` output."""
    rps_m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total_m = re.search(r"(\d+) requests in", out)
    p50_m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    p99_m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    if not (rps_m and total_m and p50_m and p99_m):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = 0
    non2xx_m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    non2xx = int(non2xx_m.group(1)) if non2xx_m else 0
    errors += non2xx
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return LoadResult(
        endpoint,
        "wrk",
        int(total_m.group(1)),
        seconds,
        float(rps_m.group(1)),
        _ms(*p50_m.groups()),
        _ms(*p99_m.groups()),
        errors,
        detail=(sock.group(0) if sock else ""),
        non_2xx=non2xx,
    )


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def wrk_load(base_url: str, endpoint: str, *, seconds: float, connections: int, pin: bool = True) -> LoadResult:
    """``wrk -t2 -c<connections> -d<seconds>s --latency``; pinned to every CPU but the first when ``pin``."""
    cpus = _cpus()
    threads = max(1, min(2, len(cpus) - 1))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    cmd += ["--latency", base_url + endpoint]
    preexec: Callable[[], None] | None = None
    if pin and len(cpus) >= 2:
        others = set(cpus[1:])

        def preexec() -> None:
            os.sched_setaffinity(0, others)

    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=preexec, timeout=seconds + 30)
    return parse_wrk(endpoint, out.stdout, seconds)


class _RawConnection:
    """A minimal HTTP/1.1 keep-alive GET client on one anyio TCP stream (cheap enough to run 200 of them in the
    same process as a load generator; httpx's pool costs more per request than the server does)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: anyio.abc.SocketStream | None = None
        self.buffer = b""

    async def get(self, path: str) -> int:
        if self.stream is None:
            self.stream = await anyio.connect_tcp(self.host, self.port)
            self.buffer = b""
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: */*\r\n\r\n"
        await self.stream.send(request.encode())
        head = await self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in headers:
            await self._exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self._until(b"\r\n")).split(b";")[0], 16)
                await self._exactly(size + 2)
                if size == 0:
                    break
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return status

    async def _fill(self) -> None:
        assert self.stream is not None
        self.buffer += await self.stream.receive(65536)

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


async def raw_load(base_url: str, endpoint: str, *, seconds: float, connections: int, max_requests: int) -> LoadResult:
    """``connections`` keep-alive connections in this process; stops at ``seconds`` or ``max_requests``."""
    parsed = httpx.URL(base_url)
    host, port = parsed.host, parsed.port or 80
    latencies: list[float] = []
    errors = 0
    sent = 0
    kinds: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors, sent
        conn = _RawConnection(host, port)
        try:
            while sent < max_requests and time.perf_counter() < deadline:
                sent += 1
                t = time.perf_counter()
                try:
                    with anyio.fail_after(10):
                        status = await conn.get(endpoint)
                    kind = "" if 200 <= status < 300 else f"status {status}"
                except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, ValueError) as exc:
                    kind = type(exc).__name__
                    await conn.aclose()
                latencies.append(time.perf_counter() - t)
                if kind:
                    errors += 1
                    kinds[kind] = kinds.get(kind, 0) + 1
        finally:
            await conn.aclose()

    start = time.perf_counter()
    with anyio.fail_after(seconds + 30):
        async with anyio.create_task_group() as tg:
            for _ in range(connections):
                tg.start_soon(worker)
    elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(n * q))] * 1e3 if n else float("nan")

    return LoadResult(
        endpoint,
        f"python ({connections} connections, <= {max_requests} req)",
        n,
        elapsed,
        n / elapsed,
        pct(0.5),
        pct(0.99),
        errors,
        detail=", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())),
        non_2xx=sum(v for k, v in kinds.items() if k.startswith("status")),
    )


def run_load(
    base_url: str,
    endpoints: tuple[str, ...] = ENDPOINTS,
    *,
    seconds: float,
    connections: int,
    use_wrk: bool,
    max_requests: int = 5000,
) -> list[LoadResult]:
    """Load every endpoint in turn (one at a time, so they don't compete)."""
    results: list[LoadResult] = []
    for endpoint in endpoints:
        if use_wrk:
            results.append(wrk_load(base_url, endpoint, seconds=seconds, connections=connections))
        else:
            results.append(
                anyio.run(
                    lambda e=endpoint: raw_load(  # type: ignore[misc]
                        base_url, e, seconds=seconds, connections=connections, max_requests=max_requests
                    )
                )
            )
    return results


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def pin_to_first_cpu(pid: int) -> None:
    """Keep the server off the load generator's CPUs (no-op on a single CPU)."""
    cpus = _cpus()
    if len(cpus) >= 2:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(task), {cpus[0]})


@contextlib.contextmanager
def own_service(tmp: Path, database_url: str, **overrides: str) -> Iterator[str]:
    """A simulator and the service (jobs every 5 s unless ``overrides`` say otherwise) on free loopback ports;
    yields the service's base URL."""
    from tests.e2e.server import serve
    from tests.e2e.stack import service_env, simulator

    (tmp / "sim").mkdir(exist_ok=True)
    (tmp / "svc").mkdir(exist_ok=True)
    with simulator(tmp / "sim", block_time=2.0) as sim:
        env = service_env(sim, database_url, **{"INDEX_INTERVAL": "5", **overrides})
        with serve(tmp / "svc", env, ready_path="/readyz") as server:
            pin_to_first_cpu(server.process.pid)
            # Warm the oracle cache and the external result cache once.
            for path in ENDPOINTS:
                httpx.get(server.base_url + path, timeout=10)
            yield server.base_url


def _database_url(tmp: Path) -> str:
    from tests.pg import pg_reachable, recreate_database

    if pg_reachable():
        return anyio.run(recreate_database, BENCH_DB)
    return f"sqlite+aiosqlite:///{tmp}/bench.sqlite3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="per endpoint (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=200, help="concurrent connections (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=20000, help="in-process generator: bound per endpoint")
    parser.add_argument("--no-wrk", action="store_true", help="use the in-process load generator even if wrk exists")
    parser.add_argument("--endpoint", action="append", default=None, help="only this path (repeatable)")
    parser.add_argument("--url", default=None, help="load an already running service (loopback only)")
    args = parser.parse_args()
    use_wrk = have_wrk() and not args.no_wrk
    if args.url and not re.match(r"^http://(127\.0\.0\.1|\[::1\]|localhost)(:\d+)?$", args.url):
        raise SystemExit("--url must be a loopback http://host:port")

    def report(base_url: str) -> None:
        print(f"load: {args.connections} connections, {args.seconds:.0f} s per endpoint, {base_url}")
        if not use_wrk:
            print("note: the in-process generator shares the CPUs with the server; its latencies are pessimistic")
        endpoints = tuple(args.endpoint) if args.endpoint else ENDPOINTS
        results = run_load(
            base_url,
            endpoints,
            seconds=args.seconds,
            connections=args.connections,
            use_wrk=use_wrk,
            max_requests=args.max_requests,
        )
        print(HEADER)
        for r in results:
            print(r.line() + (f"  [{r.detail}]" if r.detail else ""))

    if args.url:
        report(args.url)
        return
    with tempfile.TemporaryDirectory(prefix="icy-bench-load-") as tmp_name:
        tmp = Path(tmp_name)
        database_url = _database_url(tmp)
        try:
            with own_service(tmp, database_url) as base_url:
                report(base_url)
        finally:
            if database_url.startswith("postgresql"):
                from tests.pg import drop_database

                anyio.run(drop_database, BENCH_DB)


if __name__ == "__main__":
    main()
