"""The lock-free HTTP collector exposes exactly what prometheus-client's Counter and Histograms did."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest

from icy_backend.metrics.exposition import generate_openmetrics, generate_text
from icy_backend.metrics.http_collector import DURATION, HTTP_LABELS, REQUESTS, SIZE, HttpCollector

Observations = list[tuple[tuple[str, str, str], float, int]]

# (labels, duration seconds, size bytes): bucket edges, beyond the last bound, zero, escaping-worthy labels.
OBSERVATIONS: Observations = [
    (("GET", "/a", "200"), 0.005, 100),
    (("GET", "/a", "200"), 0.0051, 101),
    (("GET", "/a", "200"), 12.0, 10**6),
    (("GET", "/a", "200"), 0.0, 0),
    (("POST", "/items/{item_id}", "201"), 1.0, 12800),
    (("HEAD", '/we"ird\\pa\nth', "404"), 2.5, 0),
    (("POST", "/items/{item_id}", "201"), 0.3, 250),
]


def library_registry(observations: Observations) -> CollectorRegistry:
    """The families as they were: prometheus-client wrappers with the same names, help texts and buckets."""
    r = CollectorRegistry()
    duration = Histogram(DURATION.name, DURATION.documentation, HTTP_LABELS, buckets=DURATION.buckets, registry=r)
    requests = Counter(REQUESTS.name, REQUESTS.documentation, HTTP_LABELS, registry=r)
    size = Histogram(SIZE.name, SIZE.documentation, HTTP_LABELS, buckets=SIZE.buckets, registry=r)
    for labels, seconds, nbytes in observations:
        requests.labels(*labels).inc()
        duration.labels(*labels).observe(seconds)
        size.labels(*labels).observe(nbytes)
    return r


def collector_registry(observations: Observations) -> CollectorRegistry:
    registry = CollectorRegistry()
    collector = HttpCollector()
    registry.register(collector)
    for labels, seconds, nbytes in observations:
        collector.series(*labels).observe(seconds, nbytes)
    return registry


@pytest.mark.parametrize("observations", [OBSERVATIONS, []])
def test_renders_as_the_library_metrics(observations: Observations) -> None:
    """Both formats, through prometheus-client's encoders and ours; with series and with none yet."""
    old, new = library_registry(observations), collector_registry(observations)
    expected_text, expected_om = generate_latest(old), om_latest(old)
    assert generate_latest(new) == expected_text
    assert om_latest(new) == expected_om
    assert generate_text(new) == expected_text
    assert generate_openmetrics(new) == expected_om
    assert [f.samples for f in new.collect()] == [f.samples for f in old.collect()]


def test_series_is_created_once() -> None:
    collector = HttpCollector()
    assert collector.series("GET", "/a", "200") is collector.series("GET", "/a", "200")


def test_scrape_in_another_thread_sees_consistent_counts() -> None:
    """``_count`` == ``+Inf`` bucket == ``requests_total`` in every scrape taken while updates run."""
    collector = HttpCollector()
    series = [collector.series("GET", f"/{i}", "200") for i in range(20)]
    stop = threading.Event()
    problems: list[str] = []
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        while not stop.is_set():
            duration, requests, size = collector.collect()
            scrapes += 1
            total = {s.labels["path"]: s.value for s in requests.samples}
            for family in (duration, size):
                inf = {s.labels["path"]: s.value for s in family.samples if s.labels.get("le") == "+Inf"}
                count = {s.labels["path"]: s.value for s in family.samples if s.name.endswith("_count")}
                if inf != count:
                    problems.append(f"{family.name}: +Inf {inf} != count {count}")
            if total != {s.labels["path"]: s.value for s in duration.samples if s.name.endswith("_count")}:
                problems.append("requests_total differs from the duration count")

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for n in range(200_000):
            series[n % 20].observe((n % 100) / 10, n % 20_000)
            if n % 1000 == 0 and scrapes > 50:
                break
    finally:
        stop.set()
        thread.join()
    assert scrapes > 0
    assert problems == []
