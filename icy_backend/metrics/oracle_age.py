"""``icy_backend_oracle_data_age_seconds`` computed at scrape time (SPEC §6).

The oracle registers, per value, a function giving the seconds since that value was fetched (``None`` before its
first fetch). Every scrape reads them, so the age keeps growing while refreshes fail (fix: the gauge was set only
after a successful refresh and so could never exceed the cache TTL). A value never fetched has no series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

NAME = "icy_backend_oracle_data_age_seconds"
DOCUMENTATION = "Age of the cached oracle values, by kind (circulated_icy, treasury_btc, icy_btc_ratio)."
LABELS = ("data_type",)

AgeFn = Callable[[], float | None]


class OracleAgeCollector:
    """A custom collector: one gauge sample per watched value that has been fetched at least once."""

    def __init__(self) -> None:
        self._ages: dict[str, AgeFn] = {}

    def watch(self, data_type: str, age: AgeFn) -> None:
        """Export ``age()`` as the age of ``data_type`` (replaces an earlier watcher of the same value)."""
        self._ages[data_type] = age

    def value(self, data_type: str) -> float | None:
        """The age a scrape would export now (``None``: no series)."""
        age = self._ages.get(data_type)
        seconds = age() if age is not None else None
        return None if seconds is None else max(0.0, seconds)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(NAME, DOCUMENTATION, labels=LABELS)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(NAME, DOCUMENTATION, labels=LABELS)
        for data_type in sorted(self._ages):
            seconds = self.value(data_type)
            if seconds is not None:
                family.add_metric([data_type], seconds)
        return [family]
