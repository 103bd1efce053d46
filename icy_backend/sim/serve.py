"""``icy-backend simulate``: serve the seeded simulators under hypercorn, with the block ticker."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from hypercorn.asyncio import serve
from hypercorn.config import Config

from icy_backend.sim.combined import Simulators

log = logging.getLogger("icy_backend.sim")
# Idle keep-alive connections stay open clearly longer than any client keeps them pooled (the service's clients:
# 30 s, httpx's default: 5 s). Equal timeouts race: the server closes a connection just as a client reuses it,
# and the request fails with "server disconnected without sending a response". Hypercorn's default is 5 s.
KEEP_ALIVE_TIMEOUT = 75.0


async def _until_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def _wait_listening(host: str, port: int, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                stream = await anyio.connect_tcp(host, port)
            except OSError:
                await anyio.sleep(0.02)
                continue
            await stream.aclose()
            return


def write_env_file(path: str, values: dict[str, str]) -> None:
    """Write ``KEY=value`` lines atomically (the file holds test keys: owner-only permissions)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in values.items())
    tmp.replace(target)


async def run_simulate(
    port: int,
    env_file: str | None,
    block_time: float,
    host: str = "127.0.0.1",
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    sims: Simulators | None = None,
    replicas: int = 1,
    btc_block_time: float | None = None,
) -> None:
    """Serve all simulators on ``host:port`` until SIGTERM/SIGINT (or ``shutdown_trigger``) or cancellation.

    ``replicas=2`` also serves ``/esplora2`` and ``/evm2``, second nodes of the same chains that lag on
    ``PUT /…2/_sim/lag``, listed second in the env file's ``BTC_BLOCKSTREAM_API_URLS`` /
    ``BLOCKCHAIN_BASE_RPC_ENDPOINTS``."""
    if sims is None:
        sims = Simulators(replicas=replicas)
        sims.seed_demo()
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    user_trigger = shutdown_trigger or _until_signal
    url_host = f"[{host}]" if ":" in host else host
    stop = anyio.Event()

    async def trigger() -> None:
        async with anyio.create_task_group() as inner:

            async def wait_user() -> None:
                await user_trigger()
                stop.set()

            inner.start_soon(wait_user)
            await stop.wait()
            inner.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:

        async def serve_task() -> None:
            # Shielded: cancelling run_simulate asks hypercorn for a graceful shutdown (bounded by its
            # graceful_timeout) instead of tearing its tasks down mid-flight.
            with anyio.CancelScope(shield=True):
                await serve(sims.app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
            stop.set()
            tg.cancel_scope.cancel()

        tg.start_soon(serve_task)
        try:
            await _wait_listening(host, port)
            if env_file:
                write_env_file(env_file, sims.env_lines(f"http://{url_host}:{port}"))
            btc = block_time if btc_block_time is None else btc_block_time
            log.warning(
                "simulators listening on http://%s:%d (block time %.1fs, bitcoin %.1fs; 0 = never)",
                url_host,
                port,
                block_time,
                btc,
            )
            await sims.run_ticker(block_time, btc_block_time)
        finally:
            stop.set()
