"""The job scheduler (SPEC §8): one loop per job inside an anyio task group, timeouts as cancel scopes.

A job never overlaps itself: a tick that finds the previous run still going is skipped and counted. A run
that exceeds its timeout is cancelled and recorded as failed with class ``timeout``. A job exception never
reaches the scheduler. Cancelling the scheduler (shutdown, lost leadership) cancels the running jobs and
awaits in-flight uptime pings within the grace period.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from icy_backend.clients.errors import error_class
from icy_backend.metrics.families import Metrics
from jobs.context import JobContext
from jobs.definition import JobDefinition
from jobs.status import LATE_GRACE_SECONDS, RunOutcome, StatusBoard
from jobs.webhooks import UptimePings

log = logging.getLogger(__name__)

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Strip URLs (they may hold tokens or credentials) and known secrets from a log text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return _URL.sub("<url>", text)


def _classify(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return error_class(exc)


class Scheduler:
    """Runs every :class:`JobDefinition` every ``interval`` seconds, recording into a :class:`StatusBoard`."""

    def __init__(
        self,
        definitions: Iterable[JobDefinition],
        board: StatusBoard,
        metrics: Metrics,
        pings: UptimePings,
        *,
        first_run_delay: float,
        grace: float,
        late_grace: float = LATE_GRACE_SECONDS,
    ) -> None:
        self.definitions = {d.name: d for d in definitions}
        self.board = board
        self.metrics = metrics
        self.pings = pings
        self.first_run_delay = first_run_delay
        self.grace = grace
        self.late_grace = late_grace
        intervals = [d.interval for d in self.definitions.values()]
        # The watchdog refreshes the stalled gauge and proves the scheduler's own loop advances.
        self.watchdog_period = min([5.0, *intervals])
        self._running: set[str] = set()
        self._stalled: set[str] = set()
        self._active = False
        self._last_watchdog = time.monotonic()
        self._secrets = [d.webhook_url for d in self.definitions.values() if d.webhook_url]
        # Checked before every run starts; the job runtime sets it to the leader lock's proof (SPEC §8 fencing).
        self.may_start: Callable[[], bool] = lambda: True

    # ---- liveness -------------------------------------------------------------------------------------

    def alive(self) -> bool:
        """False when the scheduler runs here but its loops stopped advancing (for ``/livez``)."""
        if not self._active:
            return True
        if time.monotonic() - self._last_watchdog > 2 * self.watchdog_period + self.late_grace:
            return False
        return self.board.late_count() == 0

    @property
    def active(self) -> bool:
        return self._active

    # ---- main loop ------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``await tg.start(scheduler.run)`` returns once every loop is scheduled."""
        for definition in self.definitions.values():
            self.board.register(definition)
        self.board.scheduler_start()
        self.pings.reset()
        self._last_watchdog = time.monotonic()
        self._active = True
        try:
            # Outer group: uptime pings (shielded, bounded); inner group: the job loops and their runs.
            async with anyio.create_task_group() as pings_tg:
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._watchdog)
                        for definition in self.definitions.values():
                            tg.start_soon(self._loop, tg, pings_tg, definition)
                        task_status.started()
                finally:
                    self.pings.begin_shutdown(self.grace)
        finally:
            self._active = False
            self._running.clear()
            self._stalled.clear()
            self.board.scheduler_stop()
            self.metrics.jobs_stalled.set(self.board.stalled_count())

    async def _watchdog(self) -> None:
        try:
            while True:
                self._last_watchdog = time.monotonic()
                self.board.prune()
                self._refresh_stalled()
                await anyio.sleep(self.watchdog_period)
        except anyio.get_cancelled_exc_class():
            # Shutdown starts now: pings in flight get the grace period, not their full 10 s.
            self.pings.begin_shutdown(self.grace)
            raise

    def _refresh_stalled(self) -> None:
        now = time.monotonic()
        stalled = {name for name in self._running if self.board.get(name).is_stalled(now)}
        for name in stalled - self._stalled:
            log.warning("job %s stalled: no heartbeat for %.0f s", name, self.definitions[name].stall_after)
        self._stalled = stalled
        self.metrics.jobs_stalled.set(self.board.stalled_count())

    async def _loop(self, tg: TaskGroup, pings_tg: TaskGroup, definition: JobDefinition) -> None:
        name = definition.name
        next_due = time.monotonic() + self.first_run_delay
        while True:
            self.board.set_next_run(name, next_due)
            await anyio.sleep(max(0.0, next_due - time.monotonic()))
            if name in self._running:
                self.metrics.job_runs.labels(name, "skipped").inc()
                self.board.run_skipped(name)
                log.info("job %s is still running; tick skipped", name)
            elif not self.may_start():
                # Fenced: leadership is no longer proven (e.g. the event loop was blocked past the fence and
                # this tick woke before the fence timer). Start nothing; the fence cancels us in a moment.
                log.warning("job %s not started: leadership not proven", name)
            else:
                self._running.add(name)
                tg.start_soon(self._run_once, pings_tg, definition)
            now = time.monotonic()
            next_due += definition.interval
            while next_due <= now:  # the loop was held up: keep the phase, do not burst
                next_due += definition.interval

    async def _run_once(self, pings_tg: TaskGroup, definition: JobDefinition) -> None:
        name = definition.name
        ctx = JobContext(name)
        pings = self.pings.run_started(pings_tg, definition)
        self.board.run_started(name, ctx)
        self.metrics.jobs_active.inc()
        started = time.monotonic()
        outcome: RunOutcome
        error: str | None = None
        scope = anyio.move_on_after(definition.timeout)
        try:
            try:
                with scope:
                    await definition.run(ctx)
            except Exception as exc:
                text = redact("".join(traceback.format_exception(exc)), self._secrets)
                if scope.cancel_called:  # an error while unwinding from the timeout: still a timeout
                    outcome, error = "timeout", "timeout"
                else:
                    outcome, error = "failed", _classify(exc)
                log.warning("job %s failed (%s): %s", name, error, text)
            else:
                if scope.cancel_called:
                    outcome, error = "timeout", "timeout"
                    log.warning("job %s timed out after %.0f s and was cancelled", name, definition.timeout)
                elif ctx.all_items_failed:
                    outcome = "failed"
                    error = ctx.failure_kinds.most_common(1)[0][0]
                    log.warning("job %s failed: all %d items failed", name, ctx.items_failed)
                else:
                    outcome = "success"
        except anyio.get_cancelled_exc_class():
            self.board.run_interrupted(name)
            raise
        finally:
            self.metrics.jobs_active.dec()
            self._running.discard(name)
        duration = time.monotonic() - started
        self.board.run_finished(name, outcome, duration, error=error, metadata=self._metadata(ctx))
        self.metrics.job_runs.labels(name, outcome).inc()
        self.metrics.job_duration.labels(name, outcome).observe(duration)
        if outcome == "timeout":
            self.metrics.job_timeouts.labels(name).inc()
        if outcome == "success":
            self.metrics.job_last_success.labels(name).set(time.time())
        self._refresh_stalled()
        self.pings.after_run(pings_tg, pings, outcome)

    @staticmethod
    def _metadata(ctx: JobContext) -> dict[str, Any]:
        metadata = dict(ctx.metadata)
        if ctx.items_succeeded or ctx.items_failed:
            metadata["items_succeeded"] = ctx.items_succeeded
            metadata["items_failed"] = ctx.items_failed
            if ctx.failure_kinds:
                metadata["failure_kinds"] = dict(ctx.failure_kinds)
        return metadata
