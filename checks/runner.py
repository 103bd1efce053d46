"""Running checks: each under its own deadline, a set of them concurrently under the endpoint's deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import anyio

from checks.model import STATUS_VALUE, Check, CheckResult, Metadata, Outcome
from checks.redact import classify, log, log_failure
from icy_backend.metrics.families import Metrics

RunFn = Callable[[Check, float], Awaitable[CheckResult]]
"""Run one check so that it ends by the given absolute deadline (``anyio.current_time()`` clock)."""

# Slack for the endpoint's backstop scope: every check already ends by the deadline on its own.
_BACKSTOP_GRACE = 0.05


def now_utc() -> datetime:
    return datetime.now(UTC)


def timeout_result(check: Check, latency_ms: float, metadata: Metadata | None = None) -> CheckResult:
    return CheckResult(
        name=check.name,
        status="unhealthy",
        latency_ms=round(latency_ms, 3),
        checked_at=now_utc(),
        critical=check.critical,
        error="timeout",
        metadata=metadata or {},
    )


class Runner:
    """Runs checks and records the per-check metrics (SPEC §5) of every real run."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    async def run(self, check: Check, end: float | None = None) -> CheckResult:
        """Run ``check`` once; it is cancelled at ``min(its timeout, end)`` and then reported as ``timeout``.

        Never raises (except for the caller's own cancellation): a failing body becomes ``unhealthy`` with the
        exception's short class, and the full error is logged.
        """
        start = anyio.current_time()
        timeout = check.timeout if end is None else max(0.0, min(check.timeout, end - start))
        metadata: Metadata = {}
        outcome: Outcome | None = None
        failure: Exception | None = None
        with anyio.move_on_after(timeout) as scope:
            try:
                outcome = await check.body(metadata)
            except Exception as exc:  # every failure becomes a class; cancellation is not an Exception
                failure = exc
        elapsed = anyio.current_time() - start
        if scope.cancel_called and (outcome is None or outcome.status != "healthy"):
            # Cancelled by our deadline (a driver may have turned the cancellation into its own error).
            log.warning("health check %s timed out after %.0f ms", check.name, elapsed * 1000)
            result = timeout_result(check, elapsed * 1000, metadata)
        elif failure is not None:
            cls = classify(failure)
            log_failure(check.name, failure, cls)
            result = self._result(check, Outcome("unhealthy", cls), elapsed, metadata)
        else:
            assert outcome is not None
            result = self._result(check, outcome, elapsed, metadata)
        self._record(result, elapsed)
        return result

    @staticmethod
    def _result(check: Check, outcome: Outcome, elapsed: float, metadata: Metadata) -> CheckResult:
        return CheckResult(
            name=check.name,
            status=outcome.status,
            latency_ms=round(elapsed * 1000, 3),
            checked_at=now_utc(),
            critical=check.critical,
            error=None if outcome.status == "healthy" else outcome.error,
            metadata=metadata,
        )

    def _record(self, result: CheckResult, elapsed: float) -> None:
        if self._metrics is None:
            return
        self._metrics.health_status.labels(result.name).set(STATUS_VALUE[result.status])
        # When the result was taken (the end of its run): alerts ignore results that stopped being refreshed.
        self._metrics.health_last_checked.labels(result.name).set(result.checked_at.timestamp())
        self._metrics.health_duration.labels(result.name).observe(elapsed)
        self._metrics.health_checks.labels(result.name, result.status).inc()

    async def run_all(self, checks: Sequence[Check], deadline: float, run: RunFn | None = None) -> list[CheckResult]:
        """Run ``checks`` concurrently in one task group; everything is over ``deadline`` seconds from now.

        ``run`` defaults to :meth:`run` (a cache's ``get`` bound to this runner can be given instead).
        """
        run = run or self.run
        start = anyio.current_time()
        end = start + deadline
        results: dict[str, CheckResult] = {}

        async def one(check: Check) -> None:
            results[check.name] = await run(check, end)

        with anyio.move_on_after(deadline + _BACKSTOP_GRACE):
            async with anyio.create_task_group() as tg:
                for check in checks:
                    tg.start_soon(one, check, name=f"health:{check.name}")
        elapsed_ms = (anyio.current_time() - start) * 1000
        return [results.get(c.name) or timeout_result(c, elapsed_ms) for c in checks]
