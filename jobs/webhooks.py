"""Uptime webhooks (dead-man's switch, SPEC §8): a ping after each run, in the scheduler's task group."""

from __future__ import annotations

import logging
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from icy_backend.clients.errors import error_class
from jobs.definition import JobDefinition
from jobs.status import RunOutcome

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 10.0


class Pinger(Protocol):
    """What sends a ping (``icy_backend.clients.webhook.WebhookClient`` fits). Must not log the URL."""

    async def ping(self, url: str) -> bool: ...


class UptimePings:
    """Sends ``GET <url>`` after a success and ``GET <url>/fail`` after a failure (when enabled).

    Each ping runs in its own task in the scheduler's task group, so it never delays the job's next run. It is
    shielded from the scheduler's cancellation and bounded by :data:`PING_TIMEOUT_SECONDS`; at shutdown
    :meth:`begin_shutdown` shortens every bound to the grace period, so shutdown awaits pings but not forever.
    The URL holds the monitor's secret token: it is never logged, only the job name is.
    """

    def __init__(self, pinger: Pinger | None, *, fail_suffix: bool, timeout: float = PING_TIMEOUT_SECONDS) -> None:
        self._pinger = pinger
        self._fail_suffix = fail_suffix
        self._timeout = timeout
        self._scopes: set[anyio.CancelScope] = set()
        self._cap: float | None = None

    def after_run(self, tg: TaskGroup, definition: JobDefinition, outcome: RunOutcome) -> None:
        url = definition.webhook_url
        if self._pinger is None or not url:
            return
        if outcome == "success":
            target = url
        elif self._fail_suffix:
            target = url.rstrip("/") + "/fail"
        else:
            return
        tg.start_soon(self._send, definition.name, target, outcome == "success")

    def reset(self) -> None:
        """A new scheduler run starts (e.g. leadership regained): pings get their full bound again."""
        self._cap = None

    def begin_shutdown(self, grace: float) -> None:
        """Pings in flight (and any sent from now on) must finish within ``grace`` seconds."""
        cap = anyio.current_time() + grace
        self._cap = cap if self._cap is None else min(self._cap, cap)
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self._cap)

    async def _send(self, job_name: str, url: str, success: bool) -> None:
        assert self._pinger is not None
        deadline = anyio.current_time() + self._timeout
        if self._cap is not None:
            deadline = min(deadline, self._cap)
        ok = False
        with anyio.CancelScope(shield=True, deadline=deadline) as scope:
            self._scopes.add(scope)
            try:
                ok = await self._pinger.ping(url)
            except Exception as exc:  # the pinger should never raise; if it does, it must not hurt the jobs
                log.warning("uptime webhook for job %s failed: %s", job_name, error_class(exc))
                return
            finally:
                self._scopes.discard(scope)
        kind = "success" if success else "fail"
        if scope.cancelled_caught:
            log.warning("uptime webhook (%s) for job %s timed out", kind, job_name)
        elif not ok:
            log.warning("uptime webhook (%s) for job %s was not acknowledged", kind, job_name)
        else:
            log.debug("uptime webhook (%s) for job %s sent", kind, job_name)
