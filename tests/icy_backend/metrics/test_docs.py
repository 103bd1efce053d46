"""docs/metrics.md and the registry agree: every family's name, type, labels, buckets, and label values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from icy_backend.metrics import Metrics, make_registry, oracle_age
from icy_backend.metrics.business import LABEL_VALUES
from icy_backend.metrics.families import PENDING_TRANSACTION_TYPES
from icy_backend.metrics.http_collector import HTTP_FAMILIES, HTTP_LABELS
from icy_backend.metrics.middleware import KNOWN_METHODS, OTHER_METHOD
from icy_backend.settings import BREAKER_SERVICES

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
COLLECTOR_PREFIXES = ("process_", "python_")

Family = tuple[str, tuple[str, ...], tuple[float, ...]]  # type, labels, buckets


def _section(text: str, title: str) -> list[list[str]]:
    """The rows (cells) of the first table under ``## title``."""
    body = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def doc_families() -> dict[str, Family]:
    families: dict[str, Family] = {}
    for cells in _section(DOC.read_text(), "Families"):
        (name,) = _ticked(cells[0])
        buckets = tuple(float(b) for b in cells[3].split())
        assert name not in families, f"{name} listed twice"
        families[name] = (cells[1], tuple(_ticked(cells[2])), buckets)
    return families


def registry_families() -> dict[str, Family]:
    metrics = Metrics(make_registry())
    wrappers = [w for w in vars(metrics).values() if isinstance(w, MetricWrapperBase)]
    families: dict[str, Family] = {}
    for w in wrappers:
        exposed = w._name + "_total" if w._type == "counter" else w._name
        bounds = tuple(b for b in getattr(w, "_upper_bounds", ()) if not math.isinf(b))
        families[exposed] = (str(w._type), tuple(w._labelnames), tuple(float(b) for b in bounds))
    for spec in HTTP_FAMILIES:  # the HTTP request families are one custom collector, not wrappers
        exposed = spec.name + "_total" if spec.type == "counter" else spec.name
        families[exposed] = (spec.type, HTTP_LABELS, spec.buckets)
    families[oracle_age.NAME] = ("gauge", oracle_age.LABELS, ())  # a custom collector read at scrape time
    # Nothing registered behind Metrics' back: collected families are exactly the wrappers' (+ collectors).
    collected = {
        f.name + "_total" if f.type == "counter" else f.name
        for f in metrics.registry.collect()
        if not f.name.startswith(COLLECTOR_PREFIXES)
    }
    assert collected == set(families)
    return families


def test_every_family_documented_as_registered() -> None:
    doc, reg = doc_families(), registry_families()
    assert sorted(doc) == sorted(reg), "family names differ"
    for name, (kind, labels, buckets) in reg.items():
        assert doc[name][0] == kind, f"{name}: type"
        assert doc[name][1] == labels, f"{name}: labels"
        assert doc[name][2] == buckets, f"{name}: buckets"


def test_collector_families_mentioned() -> None:
    text = DOC.read_text()
    for prefix in ("process_*", "python_info", "python_gc_*"):
        assert f"`{prefix}`" in text


def _label_values() -> dict[tuple[str, str], set[str]]:
    """(label, families cell) -> the backticked values listed for it."""
    out: dict[tuple[str, str], set[str]] = {}
    for cells in _section(DOC.read_text(), "Allowed label values"):
        (label,) = _ticked(cells[0])
        out[(label, cells[1])] = set(_ticked(cells[2]))
    return out


def _values(label: str, families_cell_contains: str) -> set[str]:
    rows = _label_values().items()
    matches = [v for (lab, fam), v in rows if lab == label and families_cell_contains in fam]
    assert len(matches) == 1, (label, families_cell_contains)
    return matches[0]


@pytest.mark.parametrize(("family", "label"), [(f, lab) for f, ls in LABEL_VALUES.items() for lab in ls])
def test_business_label_values_documented(family: str, label: str) -> None:
    documented = {
        frozenset(v)
        for (lab, fam), v in _label_values().items()
        if lab == label and (family in fam or ("business families" in fam and "business_" in family))
    }
    assert documented == {LABEL_VALUES[family][label]}


def test_code_defined_label_values_documented() -> None:
    # The api_name cell also names the webhook's `endpoint` values (ping kinds start / success / fail).
    assert _values("api_name", "external API") - {"endpoint", "start", "success", "fail"} == {
        *BREAKER_SERVICES,
        "uptime_webhook",
    }
    assert _values("transaction_type", "pending") == set(PENDING_TRANSACTION_TYPES)
    assert _values("method", "icy_backend_http_*") == {*KNOWN_METHODS, OTHER_METHOD}


_CODE_DIRS = ("icy_backend", "jobs", "checks")
_HELPERS = {
    "icy_backend_business_operations_total": ("business_operation(", "record_business_operation("),
    "icy_backend_cache_operations_total": ("cache_hit(", "cache_miss("),
    "icy_backend_swap_operations_total": ("swap_operation(",),
}


def _callers() -> dict[str, str]:
    """Source text of the modules that call a family's helpers (outside the helpers' own module), by family."""
    root = DOC.parents[1]
    texts: dict[str, list[str]] = {family: [] for family in _HELPERS}
    for directory in _CODE_DIRS:
        for path in (root / directory).rglob("*.py"):
            if path.name == "business.py":
                continue
            text = path.read_text()
            for family, helpers in _HELPERS.items():
                if any(helper in text for helper in helpers):
                    texts[family].append(text)
    return {family: "\n".join(parts) for family, parts in texts.items()}


@pytest.mark.parametrize("family", sorted(_HELPERS))
def test_documented_values_of_what_is_not_derived_are_emitted(family: str) -> None:
    """Every documented operation / cache type / category is passed to a helper somewhere (fix: documented
    values such as cache_type="btc_price" were never emitted)."""
    calls = _callers()[family]
    for label, values in LABEL_VALUES[family].items():
        if label == "status" or (label == "operation" and family.startswith("icy_backend_cache")):
            continue  # outcomes follow from the helper (hit/miss) or from what happened
        missing = {v for v in values if f'"{v}"' not in calls}
        assert missing == set(), f"{family}{{{label}}}: documented but never emitted"
