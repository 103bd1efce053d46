"""The job runtime wired into the app lifespan: leader election, scheduler, reads for the endpoint."""

from __future__ import annotations

import dataclasses
import logging
import time
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
from jobs.leader import LOCK_KEY, PROOF_INTERVAL_SECONDS, LeaderLock, unsupported_setting
from jobs.scheduler import Scheduler
from jobs.status import LATE_GRACE_SECONDS, JobsReport, StatusBoard
from jobs.webhooks import Pinger, UptimePings

log = logging.getLogger(__name__)

Role = Literal["leader", "standby", "single"]
LIVENESS_NAME = "job_scheduler"
NO_LEADER_INTERVALS = 3
"""A standby that has seen no leader for this many job intervals reports ``degraded``, leader ``none``."""


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
        # A standby retries the lock every min(INDEX_INTERVAL, 5 s) (SPEC §8).
        self.retry_interval = min(settings.INDEX_INTERVAL, PROOF_INTERVAL_SECONDS)
        self.board = StatusBoard(late_grace=late_grace)
        for definition in definitions:
            self.board.register(definition)
        self.scheduler = Scheduler(
            definitions,
            self.board,
            metrics,
            UptimePings(webhook, fail_suffix=settings.UPTIME_WEBHOOK_FAIL_SUFFIX, start=settings.UPTIME_WEBHOOK_START),
            first_run_delay=settings.JOB_FIRST_RUN_DELAY,
            grace=settings.SHUTDOWN_GRACE_SECONDS,
            late_grace=late_grace,
        )
        self.leader: LeaderLock | None = None
        if engine is not None and is_postgres(engine):
            self.leader = LeaderLock(
                engine,
                key=lock_key,
                proof_interval=min(PROOF_INTERVAL_SECONDS, settings.INDEX_INTERVAL),
                connect_timeout=settings.DB_CONNECT_TIMEOUT_SECONDS,
            )
        if self.leader is not None:
            self.scheduler.may_start = self.leader.proven
        self._role: Role = "standby" if self.leader is not None else "single"
        # When some replica was last known to lead (monotonic): this one while it leads, or another one whose
        # session made this replica's pg_try_advisory_lock fail and proved itself recently (LeaderLock.
        # holder_alive). Starts at construction so a fresh standby does not cry "no leader" before it has tried.
        self._leader_seen = time.monotonic()
        self.no_leader_after = NO_LEADER_INTERVALS * settings.INDEX_INTERVAL
        self._dead = False
        metrics.job_leader.set(0)

    # ---- reads for the endpoint -------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    def report(self) -> JobsReport:
        """Jobs, summary, overall status from a snapshot.

        A standby does not judge the jobs (the leader reports them): it is ``healthy`` with
        ``summary.leader = "other"`` while some replica held the leader lock within the last
        :data:`NO_LEADER_INTERVALS` intervals, else ``degraded`` with ``summary.leader = "none"``.
        """
        role = self._role
        report = self.board.report(apply_rules=role != "standby")
        if self.scheduler.active:
            self.metrics.jobs_stalled.set(report.stalled)
        if role != "standby":
            return dataclasses.replace(report, summary={**report.summary, "leader": "self"})
        if self.leader_missing():
            return dataclasses.replace(report, status="degraded", summary={**report.summary, "leader": "none"})
        return dataclasses.replace(report, summary={**report.summary, "leader": "other"})

    def leader_missing(self) -> bool:
        """No replica (as far as this standby can tell) held the leader lock for ``no_leader_after`` s."""
        return self._role == "standby" and time.monotonic() - self._leader_seen > self.no_leader_after

    def statuses(self) -> dict[str, dict[str, Any]]:
        return self.report().jobs

    def summary(self) -> dict[str, Any]:
        return self.report().summary

    def alive(self) -> bool:
        """Liveness hook: False when the runtime died while the process serves, or its loops are stuck."""
        return not self._dead and self.scheduler.alive()

    # ---- running ----------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (shutdown cancels the jobs and awaits pings within the grace period).

        The liveness hook stays registered after this returns: ending for any reason while the process still
        serves (an exception, or a crashed sibling that ended the lifespan's task group) makes ``/livez`` fail,
        so Kubernetes restarts the pod. Only an end after :meth:`Lifecycle.begin_drain` (shutdown) is clean.
        """
        self._dead = False
        self.lifecycle.add_liveness(LIVENESS_NAME, self.alive)
        try:
            if self.leader is None:
                self._set_role("single")
                await self.scheduler.run(task_status=task_status)
            else:
                task_status.started()
                await self._campaign_forever(self.leader)
        finally:
            if not self.lifecycle.draining:
                self._dead = True
                log.error("the job runtime ended while the process still serves; /livez fails from now on")
            self._set_role("standby" if self.leader is not None else "single", leading=False)
            if self.leader is not None:
                with anyio.CancelScope(shield=True):
                    await self.leader.aclose()

    async def _campaign_forever(self, leader: LeaderLock) -> None:
        while True:
            try:
                won = await leader.campaign(self._lead, on_lost=self._lost)
                # Either this replica led until now, or the try failed because another session holds the lock
                # and that session proved itself recently (a lock held by a session that no longer proves is
                # no leader): both show that some replica led at this moment.
                if won or leader.holder_alive:
                    self._leader_seen = time.monotonic()
            except Exception as exc:
                setting = unsupported_setting(exc)
                if setting is not None:
                    # Fencing needs it: never lead without it. Loud, because no replica can ever lead.
                    log.error(
                        "job leader election impossible: PostgreSQL does not know %s (PostgreSQL 14+ is required "
                        "for leader fencing); retrying",
                        setting,
                    )
                else:
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

    def _lost(self) -> None:
        self._leader_seen = time.monotonic()
        self._set_role("standby")

    def _set_role(self, role: Role, *, leading: bool | None = None) -> None:
        if self._role != "standby" or role != "standby":
            # Leading until now (or from now): a leader existed at this moment.
            self._leader_seen = time.monotonic()
        self._role = role
        if leading is None:
            leading = role != "standby"
        self.metrics.job_leader.set(1 if leading else 0)
