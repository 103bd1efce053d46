"""The real server under SIGTERM while every uptime webhook hangs: the final pings are awaited, but only within
SHUTDOWN_GRACE_SECONDS, and the process exits 0 inside its slot of the shutdown budget (SPEC §8)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest

from icy_backend.settings import JOB_WEBHOOK_ENV
from jobs.definitions import JOB_NAMES
from tests.e2e.server import serve
from tests.e2e.stack import service_env, simulator
from tests.jobs.test_webhooks import TOKEN, Receiver, serving

pytestmark = pytest.mark.anyio

GRACE_S = 3.0


async def test_sigterm_with_hanging_webhooks_exits_within_the_grace(tmp_path: Path) -> None:
    (tmp_path / "sim").mkdir()
    (tmp_path / "svc").mkdir()
    # Not the sandbox: there every outbound client, webhooks included, talks to the in-process simulators.
    async with serving(Receiver(hang=True)) as receiver:
        with simulator(tmp_path / "sim") as sim:
            env = service_env(
                sim,
                f"sqlite+aiosqlite:///{tmp_path}/svc/e2e.sqlite3",
                JOB_FIRST_RUN_DELAY="0",
                SHUTDOWN_GRACE_SECONDS=str(GRACE_S),
                UPTIME_WEBHOOK_START="true",
                UPTIME_WEBHOOK_FAIL_SUFFIX="true",
                **{JOB_WEBHOOK_ENV[job_name]: receiver.url(job_name) for job_name in JOB_NAMES},
            )
            await _terminate_and_check(tmp_path / "svc", env, receiver)


async def _terminate_and_check(tmp_path: Path, env: dict[str, str], receiver: Receiver) -> None:
    with serve(tmp_path, env, ready_path="/readyz") as server:
        with anyio.fail_after(20):
            while len(receiver.paths) < len(JOB_NAMES):  # every job's /start ping is in flight, hanging
                await anyio.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        while server.process.poll() is None and time.monotonic() - term_at < 30:
            await anyio.sleep(0.05)
        elapsed = time.monotonic() - term_at
        log = server.log()
    assert server.process.returncode == 0, log[-4000:]
    # Awaited (not dropped at once), but only for the grace period, not the pings' own 10 s bound: the upper bound
    # is the grace plus the 2 s the budget gives leftover tasks at exit plus interpreter exit on a busy machine,
    # still well below what waiting for the pings (>= 10 s) would take. (Closing clients and the SQLite pool is
    # quick here; its worst-case bound is SHUTDOWN_CLOSE_SECONDS.)
    assert GRACE_S - 0.5 <= elapsed <= GRACE_S + 5.0, (elapsed, log[-2000:])
    assert "icy-backend stopped" in log
    assert "timed out" in log  # the pings cut by the grace are reported (by job name)
    assert "Traceback" not in log
    assert TOKEN not in log
    # Only start pings: the end ping of a run waits for its start ping, which hangs.
    assert {p.split("?")[0].rsplit("/", 1)[-1] for p in receiver.paths} == {"start"}
