"""Helpers for the job tests: fast settings, a fresh metrics registry, a runtime running in a task group."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics import Metrics, make_registry
from icy_backend.settings import Settings, load_settings
from jobs.context import JobContext
from jobs.definition import JobBody, JobDefinition
from jobs.runtime import JobRuntime
from jobs.webhooks import Pinger
from tests.ci import skip_or_fail

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def require_pg() -> None:
    """Skip when PostgreSQL is unreachable — never under CI=true, where that is a failure."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return
    except OSError:
        skip_or_fail("PostgreSQL is not reachable at 127.0.0.1:5432")


def fast_settings(**env: str) -> Settings:
    base = {
        "APP_ENV": "test",
        "INDEX_INTERVAL": "0.1",
        "JOB_FIRST_RUN_DELAY": "0",
        "JOB_STALL_AFTER": "0.2",
        "SHUTDOWN_GRACE_SECONDS": "1",
        "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
    }
    base.update(env)
    return load_settings(base, env_file=None)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(make_registry())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def job(
    name: str,
    body: JobBody,
    *,
    interval: float = 0.1,
    timeout: float = 5.0,
    stall_after: float = 5.0,
    critical: bool = True,
    webhook_url: str | None = None,
) -> JobDefinition:
    return JobDefinition(
        name=name,
        interval=interval,
        timeout=timeout,
        stall_after=stall_after,
        critical=critical,
        webhook_url=webhook_url,
        run=body,
    )


async def noop(ctx: JobContext) -> None:
    ctx.heartbeat()


def make_runtime(
    metrics: Metrics,
    definitions: Sequence[JobDefinition],
    *,
    webhook: Pinger | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> JobRuntime:
    return JobRuntime(settings or fast_settings(), metrics, None, Lifecycle(), webhook, definitions, **kwargs)


@asynccontextmanager
async def running(runtime: JobRuntime) -> AsyncIterator[JobRuntime]:
    """Run ``runtime`` in a task group (like the lifespan) and stop it on exit like shutdown: drain, cancel."""
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.run)
        try:
            yield runtime
        finally:
            runtime.lifecycle.begin_drain()
            tg.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0, step: float = 0.01) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(step)
