"""Edges of the fee and dust math: the bounds of the accepted inputs, the exact messages, ties at the dust limit."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from icy_backend.domain.fees import DEFAULT_DUST, PayoutAmounts, min_swap_sats, payout_amounts, service_fee


def test_a_zero_rate_and_zero_amounts_are_accepted() -> None:
    assert service_fee(0, Decimal(0), 0) == 0
    assert service_fee(10**9, Decimal(0), 0) == 0
    assert service_fee(10**9, Decimal(0), 7) == 7
    assert service_fee(0, Decimal("0.5"), 0) == 0
    assert service_fee(0, Decimal("0.5"), 5) == 5


def test_a_fraction_rate_just_below_one_is_accepted() -> None:
    rate = Fraction(999, 1000)
    assert service_fee(1000, rate, 0) == 999
    assert service_fee(1001, rate, 0) == 999  # floor(999.999)
    assert min_swap_sats(rate, 0, 1) == 1  # 1 - floor(0.999) = 1 >= 1


@pytest.mark.parametrize("rate", [Decimal("1"), Decimal("1.5"), Decimal("-0.01"), Fraction(-1, 10**9)])
def test_rates_outside_zero_one_are_refused(rate: Decimal | Fraction) -> None:
    with pytest.raises(ValueError, match=r"^fee rate must be a fraction in \[0, 1\)$"):
        service_fee(100, rate, 0)
    with pytest.raises(ValueError, match=r"^fee rate must be a fraction in \[0, 1\)$"):
        min_swap_sats(rate, 0, 546)


@pytest.mark.parametrize(("sats", "min_fee"), [(-1, 0), (0, -1), (-5, -5), (100, -1)])
def test_negative_amounts_are_refused(sats: int, min_fee: int) -> None:
    with pytest.raises(ValueError, match=r"^amounts must be non-negative$"):
        service_fee(sats, Decimal("0.01"), min_fee)


@pytest.mark.parametrize(("min_fee", "dust"), [(-1, 546), (0, -1), (-1, -1), (3000, -1)])
def test_min_swap_sats_refuses_negative_amounts(min_fee: int, dust: int) -> None:
    with pytest.raises(ValueError, match=r"^amounts must be non-negative$"):
        min_swap_sats(Decimal("0.01"), min_fee, dust)


def test_min_swap_sats_exact_values() -> None:
    assert min_swap_sats(Decimal(0), 0, 0) == 0
    assert min_swap_sats(Decimal(0), 0, 1) == 1
    assert min_swap_sats(Decimal(0), 0, 546) == 546
    assert min_swap_sats(Decimal(0), 10, 0) == 10
    # The rate decides: s - floor(s/2) >= 546 first holds at s = 1091 (1091 - 545 = 546).
    assert min_swap_sats(Decimal("0.5"), 0, 546) == 1091
    assert min_swap_sats(Decimal("0.5"), 100, 546) == 1091
    assert min_swap_sats(Decimal("0.5"), 600, 546) == 1146
    # 14 - floor(14/3) = 10 but 13 - floor(13/3) = 9.
    assert min_swap_sats(Fraction(1, 3), 0, 10) == 14


def test_min_swap_sats_defaults_to_the_largest_dust_limit() -> None:
    assert DEFAULT_DUST == 546
    assert min_swap_sats(Decimal(0), 0) == 546
    assert min_swap_sats(Decimal(0), 1) == 547
    assert min_swap_sats(Decimal("0.01"), 0) == min_swap_sats(Decimal("0.01"), 0, 546) == 551


def test_below_dust_is_strict_and_defaults_to_546() -> None:
    assert not PayoutAmounts(subtotal=3546, service_fee=3000, total=546).below_dust()
    assert PayoutAmounts(subtotal=3545, service_fee=3000, total=545).below_dust()
    assert not PayoutAmounts(subtotal=600, service_fee=306, total=294).below_dust(294)
    assert PayoutAmounts(subtotal=600, service_fee=307, total=293).below_dust(294)
    assert payout_amounts(3546, Decimal("0.01"), 3000) == PayoutAmounts(3546, 3000, 546)


def test_payout_amounts_use_the_rate_above_the_minimum_fee() -> None:
    assert payout_amounts(1_000_000, Decimal("0.01"), 3000) == PayoutAmounts(1_000_000, 10_000, 990_000)
    assert payout_amounts(0, Decimal("0.01"), 0) == PayoutAmounts(0, 0, 0)
