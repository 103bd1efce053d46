"""What a health check is and what it produces."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["healthy", "degraded", "unhealthy"]

# Gauge value of icy_backend_health_check_status (SPEC §5).
STATUS_VALUE: dict[Status, float] = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}

Metadata = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What a check body returns. ``error`` is a short redacted class, only for non-healthy outcomes."""

    status: Status = "healthy"
    error: str | None = None


HEALTHY = Outcome()

CheckBody = Callable[[Metadata], Awaitable[Outcome]]
"""A check body fills the metadata dict it is given (kept even when the body raises or times out)."""


@dataclass(frozen=True)
class Check:
    """A named coroutine with a criticality and its own deadline in seconds."""

    name: str
    body: CheckBody
    critical: bool = True
    timeout: float = 0.4
    cached: bool = True  # False: never served from a result cache (cheap in-memory checks such as draining)


@dataclass(frozen=True)
class CheckResult:
    """The result of one run of one check. ``checked_at`` is when the run finished (UTC)."""

    name: str
    status: Status
    latency_ms: float
    checked_at: datetime
    critical: bool = True
    error: str | None = None
    metadata: Metadata = field(default_factory=dict)


def aggregate(results: list[CheckResult]) -> Status:
    """SPEC §5: a critical unhealthy check → unhealthy; any degraded or non-critical unhealthy → degraded."""
    status: Status = "healthy"
    for result in results:
        if result.status == "unhealthy" and result.critical:
            return "unhealthy"
        if result.status != "healthy":
            status = "degraded"
    return status


def http_status(status: Status) -> int:
    """503 only for an unhealthy endpoint; degraded is still 200."""
    return 503 if status == "unhealthy" else 200
