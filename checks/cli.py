"""``icy-backend check``: run every check once, print a table, exit 0 healthy or degraded / 1 unhealthy.

Docker (and most supervisors) read any non-zero exit of a health command as unhealthy, so a degraded optional
upstream must exit 0 (SPEC §3). ``--url`` asks a running server's ``/readyz`` instead: that is what a container
``HEALTHCHECK`` should run (it is cheap, cached and never calls upstreams).
"""

from __future__ import annotations

import sys
from typing import TextIO

import anyio
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

EXIT_CODES: dict[Status, int] = {"healthy": 0, "degraded": 0, "unhealthy": 1}
EXIT_UNHEALTHY = 1


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


async def ask_readyz(
    base_url: str,
    timeout: float = 3.0,
    out: TextIO | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """``GET <base_url>/readyz`` within ``timeout`` seconds overall: 0 on a 200, else 1 (any status, a refused
    connection, a timeout, a bad URL). Prints one line with the status or the error class, never the URL."""
    out = out or sys.stdout
    url = base_url.rstrip("/") + "/readyz"
    try:
        with anyio.fail_after(timeout):
            async with httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False) as client:
                response = await client.get(url)
    except TimeoutError:
        out.write("readyz: timeout\n")
        return EXIT_UNHEALTHY
    except httpx.ConnectError:
        out.write("readyz: connection_refused\n")
        return EXIT_UNHEALTHY
    except (httpx.HTTPError, ValueError) as exc:
        out.write(f"readyz: {type(exc).__name__}\n")
        return EXIT_UNHEALTHY
    out.write(f"readyz: {response.status_code}\n")
    return 0 if response.status_code == 200 else EXIT_UNHEALTHY
