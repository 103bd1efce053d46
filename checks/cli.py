"""``icy-backend check``: run every check once, print a table, exit 0 healthy / 1 degraded / 2 unhealthy."""

from __future__ import annotations

import sys
from typing import TextIO

import httpx

from checks.model import Status
from checks.render import Report
from checks.service import build_health
from icy_backend.breakers import Breakers
from icy_backend.clients.factory import open_clients
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


async def run_checks_once(
    settings: Settings,
    out: TextIO | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sim_base_url: str | None = None,
) -> int:
    """Build engine, breakers and clients; run the database and external checks once (uncached); print the
    table to ``out`` (default stdout) and return the exit code.

    ``transport``/``sim_base_url`` point the clients at in-process simulators (tests), as in the app.
    """
    out = out or sys.stdout
    metrics = Metrics(make_registry())
    engine = make_engine(settings)
    try:
        breakers = Breakers(settings, metrics)
        async with open_clients(settings, metrics, breakers, transport=transport, sim_base_url=sim_base_url) as clients:
            health = build_health(settings, metrics, Lifecycle(), engine, clients, breakers)
            report = await health.everything()
    finally:
        await engine.dispose()
    out.write(format_table(report))
    out.flush()
    return EXIT_CODES[report.status]
