"""Integer fee and dust math, checked against ``fractions.Fraction`` and a brute-force search."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icy_backend.domain.fees import DEFAULT_DUST, DUST, min_swap_sats, payout_amounts, service_fee

rates = st.decimals(min_value=Decimal(0), max_value=Decimal("0.5"), places=4)


def test_constants() -> None:
    assert DUST == {"p2pkh": 546, "p2sh": 540, "p2wpkh": 294, "p2tr": 330}
    assert DEFAULT_DUST == 546


def test_service_fee_examples() -> None:
    assert service_fee(100_000, Decimal("0.01"), 3000) == 3000
    assert service_fee(1_000_000, Decimal("0.01"), 3000) == 10_000
    assert service_fee(1_000_099, Decimal("0.01"), 0) == 10_000  # floored, not rounded
    # A float rate would give 0.1 + 0.2 style errors; Decimal("0.003") * 1000 is exactly 3.
    assert service_fee(1000, Decimal("0.003"), 0) == 3


@given(sats=st.integers(0, 21 * 10**14), rate=rates, min_fee=st.integers(0, 10**6))
def test_service_fee_is_exact(sats: int, rate: Decimal, min_fee: int) -> None:
    assert service_fee(sats, rate, min_fee) == max(math.floor(Fraction(sats) * Fraction(rate)), min_fee)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        service_fee(-1, Decimal("0.01"), 0)
    with pytest.raises(ValueError):
        service_fee(1, Decimal("1"), 0)


@given(rate=rates, min_fee=st.integers(0, 5000), dust=st.sampled_from([*DUST.values(), 1, 0]))
def test_min_swap_sats_is_the_smallest(rate: Decimal, min_fee: int, dust: int) -> None:
    s = min_swap_sats(rate, min_fee, dust)

    def ok(x: int) -> bool:
        return x - service_fee(x, rate, min_fee) >= dust

    assert ok(s)
    assert s == 0 or not ok(s - 1)
    # Monotone: every larger amount also pays out at least the dust limit.
    assert all(ok(s + k) for k in (1, 2, 17, 1000))


def test_min_swap_sats_default() -> None:
    # 546 + 3000 = 3546; at 1 % the fee of 3546 is 35 < 3000, so the minimum fee decides.
    assert min_swap_sats(Decimal("0.01"), 3000) == 3546
    assert min_swap_sats(Decimal("0.5"), 0, 546) == 1091


def test_payout_amounts() -> None:
    p = payout_amounts(50_000, Decimal("0.01"), 3000)
    assert (p.subtotal, p.service_fee, p.total) == (50_000, 3000, 47_000)
    assert not p.below_dust()
    small = payout_amounts(3400, Decimal("0.01"), 3000)
    assert small.total == 400
    assert small.below_dust()
    assert payout_amounts(1000, Decimal("0.01"), 3000).total == -2000
