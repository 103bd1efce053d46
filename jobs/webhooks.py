"""Uptime webhooks (dead-man's switch, SPEC §8) in the healthchecks.io ping convention.

Per run: ``GET <url>/start`` when the run begins (``UPTIME_WEBHOOK_START``), then ``GET <url>`` after a success or
``GET <url>/fail`` after a failure (``UPTIME_WEBHOOK_FAIL_SUFFIX``). Every ping of one run carries the same
``rid=<uuid4>`` query parameter, so the monitor pairs start and end and measures the run. Suffixes go on the
path, before any query string the URL already has.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
from anyio.abc import TaskGroup

from icy_backend.clients.errors import error_class
from jobs.definition import JobDefinition
from jobs.status import RunOutcome

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 10.0
PingKind = Literal["start", "success", "fail"]


class Pinger(Protocol):
    """What sends a ping (``icy_backend.clients.webhook.WebhookClient`` fits). Must not log the URL."""

    async def ping(self, url: str, kind: PingKind = "success") -> bool: ...


def ping_url(url: str, kind: PingKind, rid: str) -> str:
    """``url`` with ``/start`` or ``/fail`` added to its path (before any query) and ``rid`` added to its query.

    >>> ping_url("https://hc-ping.com/abc?x=1", "fail", "r")
    'https://hc-ping.com/abc/fail?x=1&rid=r'
    """
    parts = urlsplit(url)
    path = parts.path
    if kind != "success":
        path = path.rstrip("/") + "/" + kind
    # The existing query is kept byte for byte (it may hold a token); ``rid`` is appended.
    query = f"{parts.query}&rid={rid}" if parts.query else f"rid={rid}"
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


@dataclass
class RunPings:
    """The pings of one run: its ``rid``, and when its start ping (if any) is done."""

    job_name: str
    url: str = field(repr=False)
    rid: str
    start_done: anyio.Event = field(default_factory=anyio.Event)


class UptimePings:
    """Sends the pings of each run, each in its own task of the scheduler's ping task group.

    So a ping never delays the job or its next run. Each ping is shielded from the scheduler's cancellation and
    bounded by :data:`PING_TIMEOUT_SECONDS`; at shutdown :meth:`begin_shutdown` shortens every bound to the
    grace period, so shutdown awaits pings but not forever. The end ping waits (within its own bound) for the
    run's start ping, so the monitor sees them in order. The URL holds the monitor's secret token: it is never
    logged, only the job name is.
    """

    def __init__(
        self,
        pinger: Pinger | None,
        *,
        fail_suffix: bool,
        start: bool = False,
        timeout: float = PING_TIMEOUT_SECONDS,
    ) -> None:
        self._pinger = pinger
        self._fail_suffix = fail_suffix
        self._start = start
        self._timeout = timeout
        self._scopes: set[anyio.CancelScope] = set()
        self._cap: float | None = None

    def run_started(self, tg: TaskGroup, definition: JobDefinition) -> RunPings | None:
        """A run begins: make its ``rid`` and send ``/start`` when enabled. None when the job has no URL."""
        if self._pinger is None or not definition.webhook_url:
            return None
        run = RunPings(definition.name, definition.webhook_url, str(uuid.uuid4()))
        if self._start:
            tg.start_soon(self._send, run, "start")
        else:
            run.start_done.set()
        return run

    def after_run(self, tg: TaskGroup, run: RunPings | None, outcome: RunOutcome) -> None:
        """A run ended with ``outcome``: ping success, or ``/fail`` when enabled."""
        if run is None:
            return
        if outcome == "success":
            tg.start_soon(self._send, run, "success")
        elif self._fail_suffix:
            tg.start_soon(self._send, run, "fail")

    def reset(self) -> None:
        """A new scheduler run starts (e.g. leadership regained): pings get their full bound again."""
        self._cap = None

    def begin_shutdown(self, grace: float) -> None:
        """Pings in flight (and any sent from now on) must finish within ``grace`` seconds."""
        cap = anyio.current_time() + grace
        self._cap = cap if self._cap is None else min(self._cap, cap)
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self._cap)

    async def _send(self, run: RunPings, kind: PingKind) -> None:
        assert self._pinger is not None
        deadline = anyio.current_time() + self._timeout
        if self._cap is not None:
            deadline = min(deadline, self._cap)
        ok = False
        with anyio.CancelScope(shield=True, deadline=deadline) as scope:
            self._scopes.add(scope)
            try:
                if kind != "start":
                    await run.start_done.wait()
                ok = await self._pinger.ping(ping_url(run.url, kind, run.rid), kind)
            except Exception as exc:  # the pinger should never raise; if it does, it must not hurt the jobs
                log.warning("uptime webhook (%s) for job %s failed: %s", kind, run.job_name, error_class(exc))
                return
            finally:
                self._scopes.discard(scope)
                if kind == "start":
                    run.start_done.set()
        if scope.cancelled_caught:
            log.warning("uptime webhook (%s) for job %s timed out", kind, run.job_name)
        elif not ok:
            log.warning("uptime webhook (%s) for job %s was not acknowledged", kind, run.job_name)
        else:
            log.debug("uptime webhook (%s) for job %s sent", kind, run.job_name)
