"""Per-call overhead of our client pipeline (breaker + deadline + failover bookkeeping + metrics) vs bare httpx.

Both variants call ``GET /blocks/tip/height`` on the in-process Esplora simulator through the same
``httpx.ASGITransport``, so the difference is our wrapping. Interleaved rounds in random order, medians.

    .venv/bin/python bench/client_overhead.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

from bench.record import record

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icy_backend.breakers import Breakers
from icy_backend.clients.esplora import EsploraClient
from icy_backend.metrics import Metrics, make_registry
from icy_backend.settings import Settings
from icy_backend.sim.esplora import EsploraSim

BASE = "http://sim"


async def main(calls: int, rounds: int) -> None:
    sim = EsploraSim()
    metrics = Metrics(make_registry())
    breakers = Breakers(Settings(APP_ENV="test"), metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        client = EsploraClient(http, [BASE], breakers, metrics)

        async def bare() -> None:
            response = await http.get(BASE + "/blocks/tip/height")
            response.raise_for_status()
            int(response.text)

        async def wrapped() -> None:
            await client.tip_height()

        variants: dict[str, Callable[[], Awaitable[None]]] = {"bare httpx": bare, "client": wrapped}
        for fn in variants.values():  # warm up
            for _ in range(200):
                await fn()
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            order = list(variants)
            random.shuffle(order)
            for name in order:
                fn = variants[name]
                started = time.perf_counter()
                for _ in range(calls):
                    await fn()
                samples[name].append((time.perf_counter() - started) / calls)

    bare_us = statistics.median(samples["bare httpx"]) * 1e6
    client_us = statistics.median(samples["client"]) * 1e6
    print(f"calls per round: {calls}, rounds: {rounds} (interleaved, random order), medians")
    print(f"bare httpx.AsyncClient.get : {bare_us:8.1f} us/call")
    print(f"EsploraClient.tip_height   : {client_us:8.1f} us/call")
    print(f"overhead                   : {client_us - bare_us:8.1f} us/call")
    print(f"ratio client / bare        : {client_us / bare_us:8.3f}")
    success = metrics.registry.get_sample_value(
        "icy_backend_external_api_calls_total", {"api_name": "blockstream_api", "status": "success"}
    )
    print(f"(calls recorded as success : {int(success or 0)})")
    record(
        "client_overhead",
        {
            "calls_per_round": calls,
            "rounds": rounds,
            "bare_us_per_call": round(bare_us, 1),
            "client_us_per_call": round(client_us, 1),
            "ratio_client_to_bare": round(client_us / bare_us, 3),
        },
        notes="EsploraClient (breaker + metrics + deadline) vs bare httpx, in-process simulator, medians",
        headline=(
            f"client wrapping (breaker + metrics + deadline): {client_us / bare_us:.2f}x bare httpx"
            f" ({client_us - bare_us:+.0f} µs/call against the in-process simulator)"
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    anyio.run(main, args.calls, args.rounds)
