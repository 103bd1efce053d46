"""Health reports and their formats: SPEC §5 JSON, IETF ``application/health+json``, readyz verbose text."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from checks.model import CheckResult, Status, http_status

HEALTH_JSON = "application/health+json"

_IETF_STATUS: dict[Status, str] = {"healthy": "pass", "degraded": "warn", "unhealthy": "fail"}


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds and a ``Z`` suffix."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Report:
    """One endpoint's answer: overall status, when asked, how long it took, and every check's result."""

    status: Status
    timestamp: datetime
    duration_ms: float
    results: list[CheckResult]
    warnings: list[str] = field(default_factory=list)  # readyz: exclusions that could not be applied
    excluded: list[str] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        return http_status(self.status)


def to_json(report: Report) -> dict[str, Any]:
    """The SPEC §5 body. ``error`` only for non-healthy checks; never exception text."""
    checks: dict[str, Any] = {}
    for result in report.results:
        item: dict[str, Any] = {
            "status": result.status,
            "latency_ms": result.latency_ms,
            "checked_at": rfc3339(result.checked_at),
        }
        if result.status != "healthy" and result.error:
            item["error"] = result.error
        item["metadata"] = result.metadata
        checks[result.name] = item
    return {
        "status": report.status,
        "timestamp": rfc3339(report.timestamp),
        "duration_ms": report.duration_ms,
        "checks": checks,
    }


def to_ietf(report: Report) -> dict[str, Any]:
    """draft-inadarei-api-health-check: ``checks`` keyed ``component:responseTime``."""
    checks: dict[str, list[dict[str, Any]]] = {}
    for result in report.results:
        item: dict[str, Any] = {
            "componentId": result.name,
            "observedValue": result.latency_ms,
            "observedUnit": "ms",
            "status": _IETF_STATUS[result.status],
            "time": rfc3339(result.checked_at),
        }
        if result.status != "healthy" and result.error:
            item["output"] = result.error
        checks[f"{result.name}:responseTime"] = [item]
    body: dict[str, Any] = {"status": _IETF_STATUS[report.status], "checks": checks}
    if report.status != "healthy":
        body["output"] = report.status
    return body


def to_verbose(report: Report, endpoint: str = "readyz") -> str:
    """Kubernetes-style text: ``[+]name ok`` / ``[-]name failed: reason withheld`` and a final verdict."""
    lines: list[str] = []
    for result in report.results:
        if result.status == "unhealthy":
            lines.append(f"[-]{result.name} failed: reason withheld")
        else:
            lines.append(f"[+]{result.name} ok")
    lines.extend(f"[+]{name} excluded: ok" for name in report.excluded)
    lines.extend(f"warn: {warning}" for warning in report.warnings)
    lines.append(f"{endpoint} check {'passed' if report.http_status == 200 else 'failed'}")
    return "\n".join(lines) + "\n"
