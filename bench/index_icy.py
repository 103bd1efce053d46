"""Benchmark: index 10 000 ICY Transfer logs from the EVM simulator into PostgreSQL.

    .venv/bin/python -m bench.index_icy [--logs 10000] [--per-block 100] [--chunk 2000] [--latency-ms 20]
    .venv/bin/python -m bench.index_icy --latency-ms 20 --compare-with <git ref> [--rounds 2]

Creates a private database next to ``test`` (``TEST_DATABASE_URL``, default the local one), migrates it, runs
the real ``icy_transaction_indexing`` job body through the real clients (httpx ASGI transport to the simulator,
every JSON-RPC request delayed by ``--latency-ms`` as a remote node would be) and prints the wall time and rows
per second, then drops the database.

``--compare-with REF`` measures the code of REF (checked out in a detached ``git worktree`` under /tmp) and the
working tree **in one run**, alternating ``--rounds`` times (old, new, old, new, …) in fresh processes, and
records the medians and the ratio in ``bench/results/index_icy.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent


async def _admin(sql: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


class _Counting:
    """Counts HTTP requests reaching the simulators (each one pays the latency once)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


async def measure(n_logs: int, per_block: int, chunk: int, latency_ms: int) -> dict[str, Any]:
    """One indexing run of the code importable as ``icy_backend``/``jobs`` (whichever tree is on the path)."""
    import httpx
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import create_async_engine

    from icy_backend.breakers import Breakers
    from icy_backend.clients.factory import open_clients
    from icy_backend.db.migrate import upgrade
    from icy_backend.db.tables import onchain_icy_transactions
    from icy_backend.metrics import Metrics, make_registry
    from icy_backend.settings import load_settings
    from icy_backend.sim.combined import Simulators
    from icy_backend.sim.faults import Fault
    from jobs.context import JobContext
    from jobs.indexers import make_icy_indexer

    sims = Simulators()
    sims.seed_demo()
    holders = sims.holders
    made = 0
    while made < n_logs:
        for _ in range(min(per_block, n_logs - made)):
            a, b = holders[made % len(holders)], holders[(made + 1) % len(holders)]
            sims.evm.transfer(a, b, 1)
            made += 1
        sims.evm.mine_block()
    sims.evm.mine_block()  # BLOCKCHAIN_CONFIRMATIONS=1: every benchmark block is indexed
    sims.evm.set_log_range_limit(10**9)
    if latency_ms:
        sims.evm.faults.set(Fault(path="*", latency_ms=latency_ms))
    env = {k: v for k, v in sims.env_lines("http://sim").items() if k != "DEMO_LOCKED_TREASURY_ADDRESS"}
    env.update(
        {
            "APP_ENV": "test",
            "SANDBOX": "off",
            "BLOCKCHAIN_CONFIRMATIONS": "1",
            "BLOCKCHAIN_LOG_CHUNK_BLOCKS": str(chunk),
        }
    )
    settings = load_settings(env, env_file=None)
    name = f"icy_bench_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    engine = create_async_engine(re.sub(r"/[^/]*$", f"/{name}", ADMIN_URL))
    try:
        await upgrade(engine)
        metrics = Metrics(make_registry())
        counting = _Counting(sims.app)
        transport = httpx.ASGITransport(app=counting)
        async with open_clients(
            settings, metrics, Breakers(settings, metrics), transport=transport, sim_base_url="http://sim"
        ) as clients:
            run = make_icy_indexer(engine, clients, settings, metrics)
            ctx = JobContext("icy_transaction_indexing")
            start = time.perf_counter()
            await run(ctx)
            elapsed = time.perf_counter() - start
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(onchain_icy_transactions))).scalar_one()
        return {
            "seconds": round(elapsed, 4),
            "rows": int(rows),
            "rows_per_second": round(rows / elapsed, 1),
            "chunks": ctx.metadata.get("chunks"),
            "rpc_http_requests": counting.requests,
            "blocks": sims.evm.head,
        }
    finally:
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _child(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process importing the code of ``tree``."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"--logs={args.logs}",
        f"--per-block={args.per_block}",
        f"--chunk={args.chunk}",
        f"--latency-ms={args.latency_ms}",
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=tree)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def compare(args: argparse.Namespace) -> None:
    old_tree = Path(f"/tmp/icy_bench_{re.sub(r'[^A-Za-z0-9]', '_', args.compare_with)}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.compare_with], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    if not old_tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.compare_with], check=True, cwd=ROOT)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        for _ in range(args.rounds):
            for label, tree in (("before", old_tree), ("after", ROOT)):
                result = _child(tree, args)
                runs[label].append(result)
                print(f"{label}: {result}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], check=False, cwd=ROOT)
    before = statistics.median(r["seconds"] for r in runs["before"])
    after = statistics.median(r["seconds"] for r in runs["after"])
    ratio = after / before
    headline = (
        f"indexing {runs['after'][0]['rows']} ICY transfers with {args.latency_ms} ms RPC latency: "
        f"{after:.2f} s after vs {before:.2f} s before (x{ratio:.2f}, median of {args.rounds})"
    )
    print(headline)
    from bench.record import record

    record(
        "index_icy" if args.chunk == 2000 else f"index_icy_chunk{args.chunk}",
        {
            "before_commit": commit,
            "before_seconds_median": before,
            "after_seconds_median": after,
            "after_over_before": round(ratio, 3),
            "runs": runs,
            "logs": args.logs,
            "per_block": args.per_block,
            "chunk_blocks": args.chunk,
            "latency_ms": args.latency_ms,
        },
        headline=headline,
        notes=(
            "before = the ICY indexer before consistent reads and reorg handling (one eth_getLogs per chunk); "
            "after = logs + last header + target in one batch per chunk, block hashes on rows, cursor and "
            "checkpoints. Alternating fresh processes, PostgreSQL on localhost, simulator in-process."
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--logs", type=int, default=10_000)
    parser.add_argument("--per-block", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every JSON-RPC HTTP request")
    parser.add_argument("--compare-with", default=None, help="git ref of the code to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare_with:
        compare(args)
        return
    result = asyncio.run(measure(args.logs, args.per_block, args.chunk, args.latency_ms))
    if args.child:
        print(json.dumps(result))
        return
    print(
        f"indexed {result['rows']} ICY transfer rows over {result['blocks']} blocks, chunk {args.chunk} blocks, "
        f"{result['chunks']} chunk(s), {result['rpc_http_requests']} RPC requests: {result['seconds']:.2f} s, "
        f"{result['rows_per_second']:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
