"""``icy-backend check``: run every check once, print a table, exit 0 healthy / 1 degraded / 2 unhealthy."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TextIO

from checks.model import Status
from checks.render import Report
from checks.service import build_health
from icy_backend.db.engine import make_engine
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.settings import Settings

EXIT_CODES: dict[Status, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def format_table(report: Report) -> str:
    """Name, status, latency and error class: nothing else (no URLs, hosts or secrets)."""
    rows = [("CHECK", "STATUS", "LATENCY", "ERROR")]
    for r in report.results:
        rows.append((r.name, r.status, f"{r.latency_ms:.1f} ms", r.error or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.append(f"overall: {report.status}")
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def _clients(settings: Settings, metrics: Metrics) -> AsyncIterator[tuple[Any, Any]]:
    """Breakers and clients when those parts exist (they are built elsewhere); ``(None, None)`` otherwise."""
    try:
        breakers_mod = importlib.import_module("icy_backend.breakers")
        factory = importlib.import_module("icy_backend.clients.factory")
    except ImportError:
        yield None, None
        return
    breakers = breakers_mod.Breakers(settings, metrics)
    opener: AbstractAsyncContextManager[Any] = factory.open_clients(settings, metrics, breakers)
    async with opener as clients:
        yield clients, breakers


async def run_checks_once(settings: Settings, out: TextIO | None = None) -> int:
    """Build engine and clients, run the database and external checks once (uncached), print; exit code."""
    out = out or sys.stdout
    metrics = Metrics(make_registry())
    lifecycle = Lifecycle()
    engine = make_engine(settings)
    try:
        async with _clients(settings, metrics) as (clients, breakers):
            health = build_health(settings, metrics, lifecycle, engine, clients, breakers)
            report = await health.everything()
    finally:
        await engine.dispose()
    out.write(format_table(report))
    out.flush()
    return EXIT_CODES[report.status]
