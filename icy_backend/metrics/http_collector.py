"""The three HTTP request families of SPEC §6 as one lock-free custom collector.

``icy_backend_http_request_duration_seconds`` (histogram), ``icy_backend_http_requests_total`` (counter) and
``icy_backend_http_response_size_bytes`` (histogram), labelled ``method``, ``path``, ``status``. They render exactly
as prometheus-client's ``Histogram`` / ``Counter`` with the same names, help texts and buckets did (a test compares
the expositions).

Why not prometheus-client's metrics: every ``Counter.inc`` / ``Histogram.observe`` takes a lock (~1-3 µs each on
the request path, most of the middleware's cost). Here every update happens on the event loop's thread, so an
:class:`HttpSeries` is a plain list of numbers, changed with no lock.

Why the scrape still reads sane values: ``/metrics`` renders in a worker thread (``anyio.to_thread``) while the
loop keeps updating. ``collect()`` copies each series' list once (``list[:]`` runs in C while holding the GIL, so
the copy is one instant between two bytecodes of the loop thread) and derives everything from that copy: each
histogram's cumulative buckets, its ``+Inf`` bucket and its ``_count`` come from the same numbers, so
``_count == +Inf bucket`` always holds, and ``requests_total`` is the duration histogram's count (one number, two
names). The copy can fall between two of the four updates of one request, so a ``_sum`` or the size histogram may
lag the duration histogram by that one request until the next scrape — the same skew as separate locked metrics.
This relies on the GIL (a free-threaded build would need a lock per series).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _untyped_go_string

HTTP_LABELS: Final = ("method", "path", "status")
HTTP_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_SIZE_BUCKETS: Final = tuple(100.0 * 2**k for k in range(8))

_go_string = cast(Callable[[float], str], _untyped_go_string)


@dataclass(frozen=True)
class FamilySpec:
    """Name (as registered: counters without ``_total``), type, help text and finite buckets of one family."""

    name: str
    type: str
    documentation: str
    buckets: tuple[float, ...] = ()


DURATION = FamilySpec(
    "icy_backend_http_request_duration_seconds",
    "histogram",
    "HTTP request duration in seconds, by method, route template and status.",
    HTTP_DURATION_BUCKETS,
)
REQUESTS = FamilySpec("icy_backend_http_requests", "counter", "HTTP requests, by method, route template and status.")
SIZE = FamilySpec(
    "icy_backend_http_response_size_bytes", "histogram", "HTTP response body size in bytes.", HTTP_SIZE_BUCKETS
)
HTTP_FAMILIES: Final = (DURATION, REQUESTS, SIZE)  # registration (and exposition) order

# Layout of HttpSeries.values: non-cumulative duration buckets (+Inf last), size buckets (+Inf last), two sums.
_N_DUR: Final = len(HTTP_DURATION_BUCKETS) + 1
_N_SIZE: Final = len(HTTP_SIZE_BUCKETS) + 1
_SIZE0: Final = _N_DUR
_DUR_SUM: Final = _N_DUR + _N_SIZE
_SIZE_SUM: Final = _DUR_SUM + 1
_DUR_LE: Final = (*(_go_string(b) for b in HTTP_DURATION_BUCKETS), "+Inf")
_SIZE_LE: Final = (*(_go_string(b) for b in HTTP_SIZE_BUCKETS), "+Inf")


class HttpSeries:
    """One ``(method, path, status)`` label set of all three families; update only from the event loop thread."""

    __slots__ = ("labels", "values")

    def __init__(self, method: str, path: str, status: str) -> None:
        self.labels: Final = {"method": method, "path": path, "status": status}
        self.values: list[float] = [0] * _DUR_SUM + [0.0, 0]

    def observe(self, duration: float, size: int) -> None:
        """Count one request: its duration in seconds and its response body size in bytes."""
        v = self.values
        # bisect_left over the finite bounds is Prometheus' `le`: the first bucket whose bound is >= the value;
        # past the last bound it is the +Inf slot.
        v[bisect_left(HTTP_DURATION_BUCKETS, duration)] += 1
        v[_SIZE0 + bisect_left(HTTP_SIZE_BUCKETS, size)] += 1
        v[_DUR_SUM] += duration
        v[_SIZE_SUM] += size


def _histogram(family: Metric, labels: dict[str, str], values: list[float], start: int, les: tuple[str, ...]) -> float:
    """Append one label set's cumulative buckets and ``_count`` (sum appended by the caller); return the count."""
    bucket = family.name + "_bucket"
    samples = family.samples
    acc = 0.0
    for i, le in enumerate(les, start):
        acc += values[i]
        samples.append(Sample(bucket, {**labels, "le": le}, acc))
    samples.append(Sample(family.name + "_count", labels, acc))
    return acc


class HttpCollector:
    """A prometheus-client custom collector owning every :class:`HttpSeries`; register it on the app's registry."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], HttpSeries] = {}

    def series(self, method: str, path: str, status: str) -> HttpSeries:
        """The series of one label set, created on first use (label values must come from a closed set)."""
        key = (method, path, status)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = HttpSeries(method, path, status)
        return found

    def describe(self) -> list[Metric]:
        return self._families()

    def collect(self) -> list[Metric]:
        duration, requests, size = families = self._families()
        # list(dict.values()) and list[:] run in C under the GIL: no loop-thread update lands in the middle of one.
        for series in list(self._series.values()):
            v = series.values[:]
            labels = dict(series.labels)  # the samples' own dict: a consumer may keep or change it
            count = _histogram(duration, labels, v, 0, _DUR_LE)
            duration.samples.append(Sample(duration.name + "_sum", labels, float(v[_DUR_SUM])))
            requests.samples.append(Sample(requests.name + "_total", labels, count))
            _histogram(size, labels, v, _SIZE0, _SIZE_LE)
            size.samples.append(Sample(size.name + "_sum", labels, float(v[_SIZE_SUM])))
        return families

    @staticmethod
    def _families() -> list[Metric]:
        return [
            HistogramMetricFamily(DURATION.name, DURATION.documentation, labels=HTTP_LABELS),
            CounterMetricFamily(REQUESTS.name, REQUESTS.documentation, labels=HTTP_LABELS),
            HistogramMetricFamily(SIZE.name, SIZE.documentation, labels=HTTP_LABELS),
        ]
