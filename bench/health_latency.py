"""p50/p99 latency of every health endpoint, healthy upstreams vs every upstream hanging.

    .venv/bin/python -m bench.health_latency [--requests 100]

Starts ``icy-backend simulate`` and ``icy-backend serve`` (SQLite, loopback, hypercorn) as subprocesses, sends N
sequential requests to each health endpoint, then makes every simulated upstream hang (Esplora, Base RPC,
CoinGecko, Mochi Pay) and measures again: once right after the fault (cold: the external result cache is empty,
so the first probe waits for the check deadline) and then N sequential requests (warm: served from the 10 s
cache, which is the point of it). Bounded: a few hundred requests, loopback only.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ENDPOINTS = ("/healthz", "/livez", "/readyz", "/api/v1/health/db", "/api/v1/health/external", "/api/v1/health/jobs")
SLA_MS = {"/healthz": 200, "/livez": 200, "/readyz": 500, "/api/v1/health/db": 500, "/api/v1/health/external": 2000}
SLA_MS["/api/v1/health/jobs"] = 100
PREFIXES = ("/esplora", "/evm", "/coingecko", "/mochi")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes], seconds: float = 40) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process exited early ({url})")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"not ready: {url}")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure(client: httpx.Client, n: int) -> dict[str, tuple[float, float, float, set[int]]]:
    out = {}
    for path in ENDPOINTS:
        times, codes = [], set()
        for _ in range(n):
            start = time.perf_counter()
            r = client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            codes.add(r.status_code)
        out[path] = (statistics.median(times), _pct(times, 0.99), max(times), codes)
    return out


def _print(title: str, rows: dict[str, tuple[float, float, float, set[int]]]) -> None:
    print(f"\n{title}")
    print(f"  {'endpoint':26} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'SLA ms':>7}  status")
    for path, (p50, p99, worst, codes) in rows.items():
        print(f"  {path:26} {p50:8.1f} {p99:8.1f} {worst:8.1f} {SLA_MS[path]:7}  {sorted(codes)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    n = max(1, min(args.requests, 1000))
    with tempfile.TemporaryDirectory() as tmp:
        sim_port, svc_port = _free_port(), _free_port()
        env_file = Path(tmp) / "sim.env"
        base_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
        sim = subprocess.Popen(
            [sys.executable, "-m", "icy_backend.cli", "simulate", "--port", str(sim_port), "--env-file", str(env_file)],
            cwd=REPO,
            env=base_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        svc = None
        try:
            _wait(f"http://127.0.0.1:{sim_port}/esplora/blocks/tip/height", sim)
            values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
            env = {k: v for k, v in values.items() if not k.startswith("DEMO_")}
            env.update(base_env)
            env.update(
                APP_ENV="test",
                SANDBOX="off",
                HOST="127.0.0.1",
                PORT=str(svc_port),
                DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/bench.sqlite3",
                LOG_LEVEL="ERROR",
            )
            svc = subprocess.Popen(
                [sys.executable, "-m", "icy_backend.cli", "serve"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{svc_port}"
            _wait(base + "/readyz", svc)
            with httpx.Client(base_url=base, timeout=10) as client:
                _print(f"healthy upstreams, {n} sequential requests each", _measure(client, n))
                with httpx.Client(base_url=f"http://127.0.0.1:{sim_port}", timeout=5) as control:
                    for prefix in PREFIXES:
                        control.put(f"{prefix}/_sim/faults", json={"path": "*", "hang": True}).raise_for_status()
                time.sleep(10.5)  # let the external result cache expire: the next probe really runs
                start = time.perf_counter()
                r = client.get("/api/v1/health/external")
                cold = (time.perf_counter() - start) * 1000
                print(f"\nevery upstream hanging, first external probe (cache cold): {cold:.0f} ms, {r.status_code}")
                _print(f"every upstream hanging, {n} sequential requests each (cache warm)", _measure(client, n))
        finally:
            for process in (svc, sim):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()


if __name__ == "__main__":
    main()
