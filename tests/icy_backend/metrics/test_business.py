"""Business helpers: the right samples, and unknown label values refused."""

from __future__ import annotations

from typing import Any

import pytest

from icy_backend.metrics import Metrics
from icy_backend.metrics.business import (
    business_operation,
    cache_hit,
    cache_miss,
    indexed,
    record_business_operation,
    swap_operation,
    watch_oracle_data_age,
)

from .conftest import sample

OPS = "icy_backend_business_operations_total"
OPS_DUR = "icy_backend_business_operation_duration_seconds_count"


@pytest.mark.anyio
async def test_business_operation_success_and_error(metrics: Metrics) -> None:
    async with business_operation(metrics, "circulated_icy", "oracle"):
        pass
    with pytest.raises(LookupError):
        async with business_operation(metrics, "circulated_icy", "oracle"):
            raise LookupError("upstream down")
    async with business_operation(metrics, "swap_info", "swap") as op:
        op.failed()
    ok = {"operation_type": "circulated_icy", "category": "oracle", "status": "success"}
    err = {"operation_type": "circulated_icy", "category": "oracle", "status": "error"}
    assert sample(metrics, OPS, **ok) == 1
    assert sample(metrics, OPS, **err) == 1
    assert sample(metrics, OPS_DUR, **ok) == 1
    assert sample(metrics, OPS_DUR, **err) == 1
    assert sample(metrics, OPS, operation_type="swap_info", category="swap", status="error") == 1


def test_record_business_operation(metrics: Metrics) -> None:
    record_business_operation(metrics, "swap_request", "swap", "success", 0.2)
    labels = {"operation_type": "swap_request", "category": "swap", "status": "success"}
    assert sample(metrics, OPS, **labels) == 1
    assert sample(metrics, "icy_backend_business_operation_duration_seconds_sum", **labels) == 0.2
    assert sample(metrics, "icy_backend_business_operation_duration_seconds_bucket", le="0.5", **labels) == 1


def test_cache_and_age_and_swaps_and_indexing(metrics: Metrics) -> None:
    cache_hit(metrics, "icy_btc_ratio")
    cache_hit(metrics, "icy_btc_ratio")
    cache_miss(metrics, "btc_price")
    ages = {"treasury_btc": 12.5}
    watch_oracle_data_age(metrics, "treasury_btc", lambda: ages["treasury_btc"])
    watch_oracle_data_age(metrics, "circulated_icy", lambda: -1)
    watch_oracle_data_age(metrics, "icy_btc_ratio", lambda: None)  # never fetched: no series
    swap_operation(metrics, "signature", "rejected")
    indexed(metrics, "icy_swap", 3)
    indexed(metrics, "icy_swap", 0)
    c = "icy_backend_cache_operations_total"
    assert sample(metrics, c, cache_type="icy_btc_ratio", operation="hit") == 2
    assert sample(metrics, c, cache_type="btc_price", operation="miss") == 1
    assert sample(metrics, "icy_backend_oracle_data_age_seconds", data_type="treasury_btc") == 12.5
    assert sample(metrics, "icy_backend_oracle_data_age_seconds", data_type="circulated_icy") == 0
    assert sample(metrics, "icy_backend_oracle_data_age_seconds", data_type="icy_btc_ratio") is None
    ages["treasury_btc"] = 700.0  # read at scrape time
    assert sample(metrics, "icy_backend_oracle_data_age_seconds", data_type="treasury_btc") == 700
    assert sample(metrics, "icy_backend_swap_operations_total", operation="signature", status="rejected") == 1
    assert sample(metrics, "icy_backend_indexed_transactions_total", chain="icy_swap") == 3


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (cache_hit, ("oracle_price",)),
        (cache_miss, ("",)),
        (watch_oracle_data_age, ("btc_price", lambda: 1.0)),
        (swap_operation, ("signature", "partial_success")),
        (swap_operation, ("create_swap_request", "success")),
        (indexed, ("eth", 1)),
        (indexed, ("btc", -1)),
        (record_business_operation, ("oracle_operation", "oracle", "success", 0.1)),
        (record_business_operation, ("swap_request", "swap", "timeout", 0.1)),
        (record_business_operation, ("payout", "payout", "success", 0.1)),  # payouts: swap_operations
    ],
)
def test_wrong_label_values_raise(metrics: Metrics, call: Any, args: tuple[Any, ...]) -> None:
    before = _business_samples(metrics)
    with pytest.raises(ValueError):
        call(metrics, *args)
    assert _business_samples(metrics) == before


@pytest.mark.anyio
async def test_business_operation_wrong_labels_raise(metrics: Metrics) -> None:
    with pytest.raises(ValueError):
        async with business_operation(metrics, "icy_btc_ratio_cached", "oracle"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError):
        async with business_operation(metrics, "icy_btc_ratio", "oracle_operation"):  # type: ignore[arg-type]
            pass
    assert _business_samples(metrics) == 0


def _business_samples(metrics: Metrics) -> int:
    names = (
        "icy_backend_business_",
        "icy_backend_cache_",
        "icy_backend_oracle_",
        "icy_backend_swap_",
        "icy_backend_indexed_",
    )
    return sum(len(f.samples) for f in metrics.registry.collect() if f.name.startswith(names))
