"""Integer fee and dust math shared by the swap validation, the swap indexer and ``/swap/info`` (SPEC §9).

Every function here is exact: the fee rate is a ``Decimal`` fraction (0.01 = 1 %) turned into a ``Fraction``,
and amounts are ``int`` sats. No floats on the money path.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Final

DUST: Final[dict[str, int]] = {"p2pkh": 546, "p2sh": 540, "p2wpkh": 294, "p2tr": 330}
"""Dust limits by output type, in sats."""

DEFAULT_DUST: Final[int] = 546
"""The dust limit when the address type is unknown (the largest of :data:`DUST`)."""


def _rate(rate: Decimal | Fraction) -> Fraction:
    value = Fraction(rate)
    if not 0 <= value < 1:
        raise ValueError("fee rate must be a fraction in [0, 1)")
    return value


def service_fee(sats: int, rate: Decimal | Fraction, min_fee: int) -> int:
    """``max(floor(sats * rate), min_fee)`` in exact integers."""
    if sats < 0 or min_fee < 0:
        raise ValueError("amounts must be non-negative")
    r = _rate(rate)
    return max(sats * r.numerator // r.denominator, min_fee)


def min_swap_sats(rate: Decimal | Fraction, min_fee: int, dust: int = DEFAULT_DUST) -> int:
    """The smallest ``s`` with ``s - service_fee(s, rate, min_fee) >= dust``.

    ``s - max(floor(s*r), m) >= d`` iff ``s >= d + m`` and ``s - floor(s*r) = ceil(s*(1-r)) >= d``, i.e.
    ``s*(1-r) > d - 1``. Both sides grow with ``s`` (``r < 1``): the answer is the larger lower bound.
    """
    if min_fee < 0 or dust < 0:
        raise ValueError("amounts must be non-negative")
    r = _rate(rate)
    p, q = r.numerator, r.denominator
    # s * (q - p) / q > d - 1  iff  s > (d - 1) * q / (q - p)
    by_rate = (dust - 1) * q // (q - p) + 1
    return max(dust + min_fee, by_rate, 0)


@dataclass(frozen=True)
class PayoutAmounts:
    """What a payout owes: ``total = subtotal - service_fee`` (below dust or negative: never paid)."""

    subtotal: int
    service_fee: int
    total: int

    def below_dust(self, dust: int = DEFAULT_DUST) -> bool:
        return self.total < dust


def payout_amounts(btc_amount: int, rate: Decimal | Fraction, min_fee: int) -> PayoutAmounts:
    """The payout row of a Swap event of ``btc_amount`` sats."""
    fee = service_fee(btc_amount, rate, min_fee)
    return PayoutAmounts(subtotal=btc_amount, service_fee=fee, total=btc_amount - fee)


__all__ = ["DEFAULT_DUST", "DUST", "PayoutAmounts", "min_swap_sats", "payout_amounts", "service_fee"]
