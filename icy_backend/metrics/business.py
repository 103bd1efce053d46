"""Helpers the domain code calls to record business metrics (SPEC §6); ``docs/metrics.md`` lists the values.

Every label value is one of a closed set below (a ``Literal`` for mypy, a frozenset checked at runtime): a
wrong value raises ``ValueError`` instead of creating a new series.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Final, Literal, get_args

from icy_backend.metrics.families import Metrics

OperationType = Literal[
    "circulated_icy",
    "treasury_btc",
    "icy_btc_ratio",
    "swap_info",
    "generate_signature",
    "swap_request",
]
# Payouts are counted per payout in icy_backend_swap_operations_total{operation="payout"} (SPEC §6: the business
# families cover oracle and swap operations).
Category = Literal["oracle", "swap"]
OperationStatus = Literal["success", "error"]
CacheType = Literal["circulated_icy", "treasury_btc", "icy_btc_ratio", "btc_price"]
CacheOperation = Literal["hit", "miss"]
OracleDataType = Literal["circulated_icy", "treasury_btc", "icy_btc_ratio"]
SwapOperation = Literal["signature", "swap_request", "payout"]
SwapStatus = Literal["success", "rejected", "error"]
Chain = Literal["btc", "icy", "icy_swap"]

OPERATION_TYPES: Final[frozenset[str]] = frozenset(get_args(OperationType))
CATEGORIES: Final[frozenset[str]] = frozenset(get_args(Category))
OPERATION_STATUSES: Final[frozenset[str]] = frozenset(get_args(OperationStatus))
CACHE_TYPES: Final[frozenset[str]] = frozenset(get_args(CacheType))
CACHE_OPERATIONS: Final[frozenset[str]] = frozenset(get_args(CacheOperation))
ORACLE_DATA_TYPES: Final[frozenset[str]] = frozenset(get_args(OracleDataType))
SWAP_OPERATIONS: Final[frozenset[str]] = frozenset(get_args(SwapOperation))
SWAP_STATUSES: Final[frozenset[str]] = frozenset(get_args(SwapStatus))
CHAINS: Final[frozenset[str]] = frozenset(get_args(Chain))


def _check(label: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{label}={value!r} is not one of {sorted(allowed)}")


@dataclass
class BusinessOperation:
    """Yielded by :func:`business_operation`; set ``status = "error"`` for a failure that did not raise."""

    status: OperationStatus = "success"

    def failed(self) -> None:
        self.status = "error"


@asynccontextmanager
async def business_operation(
    metrics: Metrics, operation_type: OperationType, category: Category
) -> AsyncIterator[BusinessOperation]:
    """Count and time an operation; ``status="error"`` if the block raises (re-raised) or calls ``failed()``.

    Cancellation (a timeout or shutdown above) counts as an error too: the operation did not complete.
    """
    _check("operation_type", operation_type, OPERATION_TYPES)
    _check("category", category, CATEGORIES)
    op = BusinessOperation()
    start = perf_counter()
    try:
        yield op
    except BaseException:
        op.status = "error"
        raise
    finally:
        status = op.status
        _check("status", status, OPERATION_STATUSES)
        metrics.business_operations.labels(operation_type, category, status).inc()
        metrics.business_duration.labels(operation_type, category, status).observe(perf_counter() - start)


def record_business_operation(
    metrics: Metrics,
    operation_type: OperationType,
    category: Category,
    status: OperationStatus,
    seconds: float,
) -> None:
    """Record an operation timed by the caller."""
    _check("operation_type", operation_type, OPERATION_TYPES)
    _check("category", category, CATEGORIES)
    _check("status", status, OPERATION_STATUSES)
    metrics.business_operations.labels(operation_type, category, status).inc()
    metrics.business_duration.labels(operation_type, category, status).observe(seconds)


def cache_hit(metrics: Metrics, cache_type: CacheType) -> None:
    """A real cache hit (the value came from the cache)."""
    _check("cache_type", cache_type, CACHE_TYPES)
    metrics.cache_operations.labels(cache_type, "hit").inc()


def cache_miss(metrics: Metrics, cache_type: CacheType) -> None:
    """A real cache miss (the value had to be fetched or computed)."""
    _check("cache_type", cache_type, CACHE_TYPES)
    metrics.cache_operations.labels(cache_type, "miss").inc()


def watch_oracle_data_age(metrics: Metrics, data_type: OracleDataType, age: Callable[[], float | None]) -> None:
    """Export ``age()`` (seconds since the cached value ``data_type`` was fetched, ``None`` before the first fetch)
    as ``icy_backend_oracle_data_age_seconds``, read at every scrape; negative ages are clamped to 0."""
    _check("data_type", data_type, ORACLE_DATA_TYPES)
    metrics.oracle_data_age.watch(data_type, age)


def swap_operation(metrics: Metrics, operation: SwapOperation, status: SwapStatus) -> None:
    """A swap step ended: ``rejected`` for a refused request (validation, limits), ``error`` for a fault."""
    _check("operation", operation, SWAP_OPERATIONS)
    _check("status", status, SWAP_STATUSES)
    metrics.swap_operations.labels(operation, status).inc()


def indexed(metrics: Metrics, chain: Chain, n: int) -> None:
    """``n`` rows inserted by the ``chain`` indexer (0 is allowed and records nothing new)."""
    _check("chain", chain, CHAINS)
    if n < 0:
        raise ValueError(f"indexed count must be >= 0, got {n}")
    metrics.indexed_transactions.labels(chain).inc(n)


LABEL_VALUES: Final[dict[str, dict[str, frozenset[str]]]] = {
    "icy_backend_business_operations_total": {
        "operation_type": OPERATION_TYPES,
        "category": CATEGORIES,
        "status": OPERATION_STATUSES,
    },
    "icy_backend_business_operation_duration_seconds": {
        "operation_type": OPERATION_TYPES,
        "category": CATEGORIES,
        "status": OPERATION_STATUSES,
    },
    "icy_backend_cache_operations_total": {"cache_type": CACHE_TYPES, "operation": CACHE_OPERATIONS},
    "icy_backend_oracle_data_age_seconds": {"data_type": ORACLE_DATA_TYPES},
    "icy_backend_swap_operations_total": {"operation": SWAP_OPERATIONS, "status": SWAP_STATUSES},
    "icy_backend_indexed_transactions_total": {"chain": CHAINS},
}
"""Allowed values of the business families' labels, by family (``docs/metrics.md`` is checked against it)."""
