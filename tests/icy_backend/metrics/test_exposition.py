"""The fast renderer's output is byte-identical to prometheus-client's, in both formats."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest

from icy_backend.metrics import Metrics
from icy_backend.metrics.exposition import choose_renderer, generate_openmetrics, generate_text


class _Odd:
    """Families the fast path hands back to the library: timestamps, exemplars, non-legacy names."""

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("odd_timestamped", "with a timestamp", labels=["k"])
        g.add_metric(["v"], 1.5, timestamp=1700000000.5)
        c = CounterMetricFamily("odd_exemplar", "with an exemplar", labels=["k"])
        c.add_metric(["v"], 3)
        c.samples[0] = c.samples[0]._replace(exemplar=None)
        utf = GaugeMetricFamily("odd.dotted.name", "utf-8 name")
        utf.add_metric([], 2)
        return [g, c, utf]


def filled_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for i in range(50):
        series = metrics.http_collector.series("GET", f"/route/{i}", "200")
        for j in range(i % 4):
            series.observe(i / 100 + j, i * 1000 + j * 7)
    metrics.http_collector.series("GET", 'we"ird\\pa\nth', "500").observe(0.5, 0)
    metrics.oracle_data_age.watch("treasury_btc", lambda: 1e21)
    metrics.oracle_data_age.watch("circulated_icy", lambda: float("nan"))
    metrics.job_last_success.labels("x").set(1_700_000_000.123)
    metrics.http_in_flight_counts["GET"] = 3
    Info("odd_info", "an info", registry=registry).info({"a": "1"})
    Enum("odd_enum", "an enum", states=["a", "b"], registry=registry).state("b")
    Summary("odd_summary", "a summary\nwith \\ newline", ["x"], registry=registry).labels("y").observe(2)
    Counter("odd_unit_seconds", 'help with "quotes"', unit="seconds", registry=registry).inc()
    Gauge("odd_gauge", "no labels", registry=registry).set(-0.5)
    Histogram("odd_hist", "no labels", registry=registry).observe(0.3)
    registry.register(_Odd())
    return registry


def test_text_is_byte_identical() -> None:
    registry = filled_registry()
    assert generate_text(registry) == generate_latest(registry)


def test_openmetrics_is_byte_identical() -> None:
    registry = filled_registry()
    assert generate_openmetrics(registry) == om_latest(registry)


@pytest.mark.parametrize(
    ("accept", "fast"),
    [
        ("", True),
        ("text/plain;version=0.0.4", True),
        ("application/openmetrics-text;version=1.0.0", True),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;version=1.0.0;escaping=dots", False),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", True),
        ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8", True),
        ("application/openmetrics-text;version=1.0.0;escaping=values", False),
    ],
)
def test_negotiation_matches_the_library(accept: str, fast: bool) -> None:
    from prometheus_client.exposition import choose_encoder

    registry = filled_registry()
    render, content_type = choose_renderer(accept)
    encoder, expected_type = choose_encoder(accept)
    assert content_type == expected_type
    assert render(registry) == encoder(registry)
    assert (getattr(render, "func", None) in (generate_text, generate_openmetrics)) is fast
