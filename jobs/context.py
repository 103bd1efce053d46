"""The object a running job receives: heartbeats and per-item outcomes."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


class JobContext:
    """Passed to ``run(ctx)``. Call :meth:`heartbeat` as the job makes progress (per page, chunk, payout).

    Jobs that process items report each outcome; a run in which every item failed is a failed run.
    """

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self.last_heartbeat = time.monotonic()
        self.items_succeeded = 0
        self.items_failed = 0
        self.failure_kinds: Counter[str] = Counter()
        self.metadata: dict[str, Any] = {}

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()

    def item_succeeded(self) -> None:
        self.items_succeeded += 1
        self.heartbeat()

    def item_failed(self, kind: str) -> None:
        """``kind`` is a short error class (never an address, amount or exception text)."""
        self.items_failed += 1
        self.failure_kinds[kind] += 1
        self.heartbeat()

    def set_metadata(self, key: str, value: Any) -> None:
        """Small JSON-safe facts for the job status (counts, cursor heights; never addresses or amounts)."""
        self.metadata[key] = value

    @property
    def all_items_failed(self) -> bool:
        return self.items_failed > 0 and self.items_succeeded == 0
