"""The job runtime wired into the app lifespan: leader election, scheduler, reads for the endpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import anyio
from anyio.abc import TaskStatus
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import error_class
from icy_backend.db.engine import is_postgres
from icy_backend.lifecycle import Lifecycle
from icy_backend.metrics.families import PENDING_TRANSACTION_TYPES, Metrics
from icy_backend.settings import Settings
from jobs.definition import JobDefinition
from jobs.leader import LOCK_KEY, LeaderLock
from jobs.scheduler import Scheduler
from jobs.status import LATE_GRACE_SECONDS, JobsReport, StatusBoard
from jobs.webhooks import Pinger, UptimePings

log = logging.getLogger(__name__)

Role = Literal["leader", "standby", "single"]
LIVENESS_NAME = "job_scheduler"


def set_pending(metrics: Metrics, kind: str, n: int) -> None:
    """Set ``icy_backend_pending_transactions{transaction_type=kind}`` (processing jobs, after each run)."""
    if kind not in PENDING_TRANSACTION_TYPES:
        raise ValueError(f"transaction_type must be one of {PENDING_TRANSACTION_TYPES}")
    metrics.pending_transactions.labels(kind).set(max(0, n))


class JobRuntime:
    """Runs the jobs in this replica when it may (SQLite: always, ``single``; PostgreSQL: while it leads).

    Start it in the lifespan's task group with ``await tg.start(runtime.run)``; the jobs endpoint reads
    :attr:`role` and :meth:`report` (memory only).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        engine: AsyncEngine | None,
        lifecycle: Lifecycle,
        webhook: Pinger | None,
        definitions: Sequence[JobDefinition],
        *,
        lock_key: int = LOCK_KEY,
        late_grace: float = LATE_GRACE_SECONDS,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine = engine
        self.lifecycle = lifecycle
        self.retry_interval = settings.INDEX_INTERVAL
        self.board = StatusBoard(late_grace=late_grace)
        for definition in definitions:
            self.board.register(definition)
        self.scheduler = Scheduler(
            definitions,
            self.board,
            metrics,
            UptimePings(webhook, fail_suffix=settings.UPTIME_WEBHOOK_FAIL_SUFFIX),
            first_run_delay=settings.JOB_FIRST_RUN_DELAY,
            grace=settings.SHUTDOWN_GRACE_SECONDS,
            late_grace=late_grace,
        )
        self.leader: LeaderLock | None = None
        if engine is not None and is_postgres(engine):
            keepalive = min(5.0, settings.INDEX_INTERVAL)
            self.leader = LeaderLock(engine, key=lock_key, keepalive_interval=keepalive)
        self._role: Role = "standby" if self.leader is not None else "single"
        metrics.job_leader.set(0)

    # ---- reads for the endpoint -------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    def report(self) -> JobsReport:
        """Jobs, summary, overall status from a snapshot; a standby is healthy (the leader reports)."""
        report = self.board.report(apply_rules=self._role != "standby")
        if self.scheduler.active:
            self.metrics.jobs_stalled.set(report.stalled)
        return report

    def statuses(self) -> dict[str, dict[str, Any]]:
        return self.report().jobs

    def summary(self) -> dict[str, Any]:
        return self.report().summary

    def alive(self) -> bool:
        """Liveness hook: False while the scheduler runs here and its loops are stuck."""
        return self.scheduler.alive()

    # ---- running ----------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (shutdown cancels the jobs and awaits pings within the grace period)."""
        self.lifecycle.add_liveness(LIVENESS_NAME, self.alive)
        try:
            if self.leader is None:
                self._set_role("single")
                await self.scheduler.run(task_status=task_status)
            else:
                task_status.started()
                await self._campaign_forever(self.leader)
        finally:
            self.lifecycle.remove_liveness(LIVENESS_NAME)
            self._set_role("standby" if self.leader is not None else "single", leading=False)

    async def _campaign_forever(self, leader: LeaderLock) -> None:
        while True:
            try:
                await leader.campaign(self._lead, on_lost=lambda: self._set_role("standby"))
            except Exception as exc:
                log.warning("job leader election failed (%s); retrying", error_class(exc))
            self._set_role("standby")
            # A replica that just lost its lock connection waits longer, so a healthy standby takes over.
            await anyio.sleep(self.retry_interval * (2 if leader.lost else 1))

    async def _lead(self) -> None:
        log.info("this replica holds the job leader lock; running jobs")
        self._set_role("leader")
        try:
            await self.scheduler.run()
        finally:
            self._set_role("standby")
            log.info("job leadership ended")

    def _set_role(self, role: Role, *, leading: bool | None = None) -> None:
        self._role = role
        if leading is None:
            leading = role != "standby"
        self.metrics.job_leader.set(1 if leading else 0)
