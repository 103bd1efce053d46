"""Prometheus metrics: one private registry per app and every metric family of SPEC §6."""

from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry

__all__ = ["Metrics", "make_registry"]
