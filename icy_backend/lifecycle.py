"""Process lifecycle flags read by the probes: started, draining, and liveness hooks."""

from __future__ import annotations

import time
from collections.abc import Callable


class Lifecycle:
    """``/readyz`` is 503 until :meth:`mark_started` and again from :meth:`begin_drain` on.

    Liveness hooks let parts that own a loop (the job scheduler) make ``/livez`` fail when the loop is stuck.
    """

    def __init__(self) -> None:
        self.started = False
        self.draining = False
        self.started_at: float | None = None
        self._liveness: dict[str, Callable[[], bool]] = {}

    def mark_started(self) -> None:
        self.started = True
        self.started_at = time.time()

    def begin_drain(self) -> None:
        self.draining = True

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    def add_liveness(self, name: str, alive: Callable[[], bool]) -> None:
        """Register a cheap, non-blocking predicate; ``/livez`` fails while it returns False."""
        self._liveness[name] = alive

    def remove_liveness(self, name: str) -> None:
        self._liveness.pop(name, None)

    def dead_parts(self) -> list[str]:
        return [name for name, alive in self._liveness.items() if not alive()]
