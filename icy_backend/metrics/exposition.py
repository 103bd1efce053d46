"""Fast Prometheus text / OpenMetrics rendering, byte-identical to prometheus-client's encoders.

prometheus-client's ``generate_latest`` re-validates and re-escapes every label *name* of every sample line
(through regexes and a StringIO), which makes a 2000-series scrape several times slower than formatting it.
Our names are fixed at registration, so this renderer validates each metric and label name once (cached) and
formats the lines directly. Anything unusual (exemplars, timestamps, native histograms, non-legacy names, an
escaping scheme other than the no-op ones, an OpenMetrics version other than 1.0.0) is rendered by
prometheus-client itself, per family, so the output is always the library's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.utils import floatToGoString as _untyped_go_string
from prometheus_client.validation import _is_valid_legacy_labelname, _is_valid_legacy_metric_name

# Escaping schemes that leave legacy-valid names untouched.
_NOOP_ESCAPINGS = frozenset({om.UNDERSCORES, om.ALLOWUTF8})
floatToGoString = cast(Callable[[float], str], _untyped_go_string)
_om_latest = cast(Callable[..., bytes], om.generate_latest)
_TEXT_MUNGE = {"counter": "counter", "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}


class _Fallback(Exception):
    """This family needs prometheus-client's own encoder."""


class _One:
    """A collector yielding one already-collected family (to hand it to the library's encoder)."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self._metric]


@functools.lru_cache(maxsize=4096)
def _legacy_metric_name(name: str) -> bool:
    return bool(_is_valid_legacy_metric_name(name))


@functools.lru_cache(maxsize=4096)
def _legacy_label_name(name: str) -> bool:
    return bool(_is_valid_legacy_labelname(name))


def _labels(labels: dict[str, str]) -> str:
    parts = []
    for k, v in sorted(labels.items()):
        if not _legacy_label_name(k):
            raise _Fallback
        if "\\" in v or "\n" in v or '"' in v:
            v = v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        parts.append(f'{k}="{v}"')
    return "{" + ",".join(parts) + "}"


def _check_sample(s: Any) -> None:
    if s.timestamp is not None or s.exemplar is not None or s.native_histogram is not None:
        raise _Fallback
    if not _legacy_metric_name(s.name):
        raise _Fallback


def _text_family(metric: Metric, out: list[str]) -> None:
    name, mtype = metric.name, metric.type
    if not _legacy_metric_name(name):
        raise _Fallback
    if mtype == "counter":
        mname = name + "_total"
    elif mtype == "info":
        mname = name + "_info"
    else:
        mname = name
    mtype = _TEXT_MUNGE.get(mtype, "untyped" if mtype == "unknown" else mtype)
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    lines = [f"# HELP {mname} {doc}\n# TYPE {mname} {mtype}\n"]
    # OpenMetrics-only samples go into gauges after the family, as the library does.
    moved: dict[str, list[str]] = {}
    special = {name + "_created": "_created", name + "_gsum": "_gsum", name + "_gcount": "_gcount"}
    for s in metric.samples:
        _check_sample(s)
        line = f"{s.name}{_labels(s.labels) if s.labels else ''} {floatToGoString(s.value)}\n"
        suffix = special.get(s.name)
        if suffix is None:
            lines.append(line)
        else:
            moved.setdefault(suffix, []).append(line)
    for suffix, moved_lines in sorted(moved.items()):
        lines.append(f"# HELP {name}{suffix} {doc}\n# TYPE {name}{suffix} gauge\n")
        lines.extend(moved_lines)
    out.extend(lines)


def _om_family(metric: Metric, out: list[str]) -> None:
    name = metric.name
    if not _legacy_metric_name(name):
        raise _Fallback
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    lines = [f"# HELP {name} {doc}\n# TYPE {name} {metric.type}\n"]
    if metric.unit:
        lines.append(f"# UNIT {name} {metric.unit}\n")
    for s in metric.samples:
        _check_sample(s)
        value = floatToGoString(s.value) if s.value is not None else ""
        lines.append(f"{s.name}{_labels(s.labels) if s.labels else ''} {value}\n")
    out.extend(lines)


def generate_text(registry: CollectorRegistry, escaping: str = om.UNDERSCORES) -> bytes:
    """Prometheus text format, as ``prometheus_client.generate_latest(registry, escaping)``."""
    out: list[str] = []
    for metric in registry.collect():
        try:
            _text_family(metric, out)
        except _Fallback:
            out.append(text_latest(_One(metric), escaping=escaping).decode())
    return "".join(out).encode()


def generate_openmetrics(registry: CollectorRegistry, escaping: str = om.UNDERSCORES) -> bytes:
    """OpenMetrics 1.0.0, as ``prometheus_client.openmetrics.exposition.generate_latest(registry, escaping)``."""
    out: list[str] = []
    for metric in registry.collect():
        try:
            _om_family(metric, out)
        except _Fallback:
            family = _om_latest(_One(metric), escaping=escaping, version="1.0.0")
            out.append(family.decode().removesuffix("# EOF\n"))
    out.append("# EOF\n")
    return "".join(out).encode()


def choose_renderer(accept: str) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """(render function, content type) for an ``Accept`` header: prometheus-client's negotiation, our speed."""
    encoder, content_type = choose_encoder(accept)
    keywords: dict[str, Any] = getattr(encoder, "keywords", {})
    escaping = keywords.get("escaping", om.UNDERSCORES)
    if escaping not in _NOOP_ESCAPINGS:
        return encoder, content_type
    if content_type.startswith("application/openmetrics-text"):
        if keywords.get("version", "1.0.0") != "1.0.0":
            return encoder, content_type
        return functools.partial(generate_openmetrics, escaping=escaping), content_type
    return functools.partial(generate_text, escaping=escaping), content_type
