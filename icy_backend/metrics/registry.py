"""A private ``CollectorRegistry`` with the process, platform and GC collectors."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# `*_created` samples double the series count of every counter and histogram and no alert or panel uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def make_registry() -> CollectorRegistry:
    """A fresh registry: our families plus prometheus-client's process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
