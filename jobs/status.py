"""Job status tracking as plain data, and the health rules of the jobs endpoint (SPEC §5, §8).

Everything here is synchronous and reads memory only, so the endpoint answers in well under 100 ms. Wall-clock
times (``time.time``) are for display; stall and lateness use the monotonic clock that ``JobContext`` uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from jobs.context import JobContext
from jobs.definition import JobDefinition

JobState = Literal["pending", "running", "success", "failed"]
RunOutcome = Literal["success", "failed", "timeout"]
HealthStatus = Literal["healthy", "degraded", "unhealthy"]

LATE_GRACE_SECONDS = 30.0
RETENTION_SECONDS = 24 * 3600.0
CRITICAL_FAILURE_STREAK = 3


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds → ``2026-01-02T03:04:05.678Z`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _json_safe(value: Any, depth: int = 0) -> bool:
    """Whether a job's metadata value can be shown as JSON (a bad value must not break the endpoint)."""
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth < 3 and isinstance(value, list | tuple):
        return all(_json_safe(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v, depth + 1) for k, v in value.items())
    return False


@dataclass
class JobStatus:
    """The status of one job. Durations are **milliseconds** (the old service put nanoseconds here)."""

    job_name: str
    interval: float
    stall_after: float
    critical: bool
    created_at: float
    updated_at: float
    state: JobState = "pending"
    last_run_time: float | None = None
    last_success_time: float | None = None
    last_duration_ms: float | None = None
    next_run_time: float | None = None
    next_run_due: float | None = None  # monotonic twin of next_run_time, for lateness
    success_count: int = 0
    failure_count: int = 0
    consecutive_failures: int = 0
    total_execution_ms: float = 0.0
    max_execution_ms: float | None = None
    min_execution_ms: float | None = None
    last_error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    skipped_count: int = 0
    current: JobContext | None = None
    state_before_run: JobState = "pending"

    @property
    def runs(self) -> int:
        return self.success_count + self.failure_count

    @property
    def average_execution_ms(self) -> float | None:
        return self.total_execution_ms / self.runs if self.runs else None

    def is_stalled(self, now_mono: float) -> bool:
        """Running with no heartbeat for ``stall_after``; a long run that heartbeats is not stalled."""
        if self.state != "running" or self.current is None:
            return False
        return now_mono - self.current.last_heartbeat > self.stall_after

    def is_late(self, now_mono: float, grace: float = LATE_GRACE_SECONDS) -> bool:
        """The next tick is overdue by more than one interval + grace (the scheduler loop is stuck)."""
        return self.next_run_due is not None and now_mono - self.next_run_due > self.interval + grace

    def display_status(self, now_mono: float) -> str:
        return "stalled" if self.is_stalled(now_mono) else self.state

    def to_json(self, now_mono: float, grace: float = LATE_GRACE_SECONDS) -> dict[str, Any]:
        """The JobStatus body of SPEC §5 (no raw errors, no stack traces, no URLs)."""
        return {
            "job_name": self.job_name,
            "status": self.display_status(now_mono),
            "last_run_time": rfc3339(self.last_run_time),
            "last_success_time": rfc3339(self.last_success_time),
            "last_duration_ms": _ms(self.last_duration_ms),
            "next_run_time": rfc3339(self.next_run_time),
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "consecutive_failures": self.consecutive_failures,
            "average_execution_ms": _ms(self.average_execution_ms),
            "max_execution_ms": _ms(self.max_execution_ms),
            "min_execution_ms": _ms(self.min_execution_ms),
            "last_error": self.last_error,
            "metadata": dict(self.metadata),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "late": self.is_late(now_mono, grace),
            "skipped_count": self.skipped_count,
        }


@dataclass(frozen=True)
class JobsReport:
    """One consistent snapshot: the jobs map, the summary and the overall status come from the same read."""

    status: HealthStatus
    jobs: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    stalled: int

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unhealthy" else 200


class StatusBoard:
    """In-memory statuses of every registered job (plus recently unregistered ones, kept 24 h)."""

    def __init__(
        self,
        *,
        late_grace: float = LATE_GRACE_SECONDS,
        retention: float = RETENTION_SECONDS,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.late_grace = late_grace
        self.retention = retention
        self._wall = wall
        self._mono = monotonic
        self._jobs: dict[str, JobStatus] = {}
        self._registered: set[str] = set()
        self.scheduler_started: float | None = None  # monotonic; None while no scheduler runs here

    # ---- registration ---------------------------------------------------------------------------------

    def register(self, definition: JobDefinition) -> JobStatus:
        now = self._wall()
        status = self._jobs.get(definition.name)
        if status is None:
            status = JobStatus(
                job_name=definition.name,
                interval=definition.interval,
                stall_after=definition.stall_after,
                critical=definition.critical,
                created_at=now,
                updated_at=now,
            )
            self._jobs[definition.name] = status
        else:
            status.interval = definition.interval
            status.stall_after = definition.stall_after
            status.critical = definition.critical
        self._registered.add(definition.name)
        return status

    def unregister(self, name: str) -> None:
        """Keep the status for :attr:`retention` after its last update, then :meth:`prune` drops it."""
        self._registered.discard(name)

    def is_registered(self, name: str) -> bool:
        return name in self._registered

    def prune(self) -> None:
        cutoff = self._wall() - self.retention
        for name in [n for n, s in self._jobs.items() if n not in self._registered and s.updated_at < cutoff]:
            del self._jobs[name]

    def get(self, name: str) -> JobStatus:
        return self._jobs[name]

    # ---- scheduler events -----------------------------------------------------------------------------

    def scheduler_start(self) -> None:
        self.scheduler_started = self._mono()

    def scheduler_stop(self) -> None:
        """No scheduler runs here any more (shutdown, lost leadership): no next run is due."""
        self.scheduler_started = None
        for status in self._jobs.values():
            status.next_run_time = None
            status.next_run_due = None

    def set_next_run(self, name: str, due_mono: float) -> None:
        status = self._jobs[name]
        status.next_run_due = due_mono
        status.next_run_time = self._wall() + (due_mono - self._mono())

    def run_started(self, name: str, ctx: JobContext) -> None:
        status = self._jobs[name]
        now = self._wall()
        status.state_before_run = status.state
        status.state = "running"
        status.current = ctx
        status.last_run_time = now
        status.updated_at = now

    def run_skipped(self, name: str) -> None:
        self._jobs[name].skipped_count += 1

    def run_finished(
        self,
        name: str,
        outcome: RunOutcome,
        duration_s: float,
        *,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record a finished run. ``error`` is a short class; a ``timeout`` run fails with class timeout."""
        status = self._jobs[name]
        now = self._wall()
        duration_ms = duration_s * 1000.0
        status.current = None
        status.last_duration_ms = duration_ms
        status.total_execution_ms += duration_ms
        if status.max_execution_ms is None or duration_ms > status.max_execution_ms:
            status.max_execution_ms = duration_ms
        if status.min_execution_ms is None or duration_ms < status.min_execution_ms:
            status.min_execution_ms = duration_ms
        # Metadata is per run (the old service kept stack traces and error types across later successes).
        status.metadata = {k: v for k, v in (metadata or {}).items() if _json_safe(v)}
        if outcome == "success":
            status.state = "success"
            status.success_count += 1
            status.consecutive_failures = 0
            status.last_success_time = now
            status.last_error = None
        else:
            status.state = "failed"
            status.failure_count += 1
            status.consecutive_failures += 1
            status.last_error = "timeout" if outcome == "timeout" else (error or "internal_error")
        status.updated_at = now

    def run_interrupted(self, name: str) -> None:
        """A run cancelled by shutdown or lost leadership: not a result of the job, so no counts change."""
        status = self._jobs[name]
        status.current = None
        status.state = status.state_before_run
        status.updated_at = self._wall()

    # ---- reads ----------------------------------------------------------------------------------------

    def stalled_count(self) -> int:
        now = self._mono()
        return sum(1 for s in self._jobs.values() if s.is_stalled(now))

    def late_count(self) -> int:
        now = self._mono()
        return sum(1 for s in self._jobs.values() if s.is_late(now, self.late_grace))

    def report(self, *, apply_rules: bool = True) -> JobsReport:
        """Jobs, summary and overall status (SPEC §5). ``apply_rules=False`` (standby) is always healthy."""
        self.prune()
        now_mono = self._mono()
        jobs: dict[str, dict[str, Any]] = {}
        running = healthy = unhealthy = stalled = late = 0
        unhealthy_reason = degraded_reason = False
        last_update: float | None = None
        for name in sorted(self._jobs):
            status = self._jobs[name]
            jobs[name] = status.to_json(now_mono, self.late_grace)
            shown = jobs[name]["status"]
            if last_update is None or status.updated_at > last_update:
                last_update = status.updated_at
            is_late: bool = jobs[name]["late"]
            late += is_late
            if shown == "stalled":
                stalled += 1
            elif shown == "running":
                running += 1
            elif shown == "success":
                healthy += 1
            elif shown == "failed":
                unhealthy += 1
            if name not in self._registered:
                continue  # retained for inspection; the rules judge only the jobs this process runs
            if shown == "stalled":
                unhealthy_reason = True
            if status.critical and status.consecutive_failures >= CRITICAL_FAILURE_STREAK:
                unhealthy_reason = True
            if status.state == "failed" or is_late or self._never_ran(status, now_mono):
                degraded_reason = True
        summary = {
            "total_jobs": len(jobs),
            "running_jobs": running,
            "healthy_jobs": healthy,
            "unhealthy_jobs": unhealthy,
            "stalled_jobs": stalled,
            "late_jobs": late,
            "last_update_time": rfc3339(last_update),
        }
        overall: HealthStatus = "healthy"
        if apply_rules:
            overall = "unhealthy" if unhealthy_reason else "degraded" if degraded_reason else "healthy"
        return JobsReport(status=overall, jobs=jobs, summary=summary, stalled=stalled)

    def _never_ran(self, status: JobStatus, now_mono: float) -> bool:
        """No finished run although the scheduler started here more than two intervals ago."""
        if self.scheduler_started is None or status.runs:
            return False
        return now_mono - self.scheduler_started > 2 * status.interval
