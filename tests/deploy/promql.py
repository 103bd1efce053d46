"""Metric names in PromQL expressions and in a Prometheus exposition, for "every name we query is exported".

Reusable against the running app: ``exposed_names(text_of_GET_/metrics)`` and ``metric_names_in(expr)``.
"""

from __future__ import annotations

import re

# Our families and prometheus-client's process/platform/GC collectors. `up`, functions, keywords and label
# names never match these prefixes, so they are ignored by construction.
_NAME = re.compile(r"(?<![A-Za-z0-9_:$])((?:icy_backend|process|python)_[A-Za-z0-9_:]*[A-Za-z0-9_])(?![A-Za-z0-9_:])")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_TEMPLATE_VAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$")
_SAMPLE_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{|\s)")

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
    "untyped": ("",),
}


def metric_names_in(expr: str) -> set[str]:
    """Names of our (and the process/python collectors') metrics that a PromQL expression selects.

    String literals, label matchers, Grafana variables (``$__rate_interval``, ``${DS_PROMETHEUS}``) and
    comments are removed first, so label names and values are never mistaken for metric names.
    """
    text = "\n".join(line.split("#", 1)[0] for line in _STRING.sub('""', expr).splitlines())
    text = _TEMPLATE_VAR.sub(" ", text)
    while True:
        stripped = _BRACES.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return set(_NAME.findall(text))


def exposed_names(exposition: str) -> set[str]:
    """Every name PromQL can select from a text exposition (Prometheus 0.0.4 or OpenMetrics).

    Families resolve to the sample names their type produces even when no child exists yet: a histogram gives
    ``_bucket``, ``_sum`` and ``_count`` (never the bare name), a counter gives ``<name>_total``.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        type_match = _TYPE_LINE.match(line)
        if type_match:
            family, kind = type_match.groups()
            if kind == "counter":
                family = family.removesuffix("_total")
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
            continue
        if line and not line.startswith("#"):
            sample = _SAMPLE_LINE.match(line)
            if sample:
                names.add(sample.group(1))
    return names
