"""What the scheduler runs: a named job body with its interval, timeout, stall threshold and webhook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from jobs.context import JobContext

JobBody = Callable[[JobContext], Awaitable[None]]
"""A job body: ``async def run(ctx: JobContext) -> None``."""


@dataclass(frozen=True, kw_only=True)
class JobDefinition:
    """One scheduled job. Times are in seconds.

    ``timeout`` is a cancel scope around each run; ``stall_after`` is how long a run may go without
    ``ctx.heartbeat()`` before it reads as stalled (independent of the timeout). ``webhook_url`` is a secret
    (it holds the monitor's token): it is kept out of ``repr`` and never logged.
    """

    name: str
    interval: float
    timeout: float
    stall_after: float
    run: JobBody
    critical: bool = True
    webhook_url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("job name must not be empty")
        for attr in ("interval", "timeout", "stall_after"):
            if not getattr(self, attr) > 0:
                raise ValueError(f"{attr} of job {self.name} must be greater than zero")
