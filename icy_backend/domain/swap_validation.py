"""Validation of a swap before anything is signed or stored (SPEC §9 "Swap signature", "Swap requests").

Order of the checks (the first failure is reported): amounts are positive decimal integers; ``btc_address`` is
valid for ``BTC_NETWORK``; ``btc_amount`` ≥ the dust limit of the address type; ``btc_amount`` minus the service
fee ≥ that dust limit; ``btc_amount`` does not exceed the value of ``icy_amount`` at the pricing ratio by more
than 1 % (fix: the old endpoint signed any pair — a way to drain the treasury).

Conversion (fix: the old one was 100x too large): the ratio ``R`` is ICY per 1 BTC x 10^8, so
``sats = icy_wei * 10^8 * 10^8 / (R * 10^18) = icy_wei / (R * 100)``, floored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from icy_backend.domain.btc_address import BtcAddress, InvalidAddress, parse_address
from icy_backend.domain.fees import service_fee

UINT256_MAX = 2**256 - 1
_DIGITS = re.compile(r"[0-9]{1,78}")
# Tolerance of the price check: btc_amount ≤ value × 101/100.
TOLERANCE_NUM, TOLERANCE_DEN = 101, 100


class SwapRejected(ValueError):
    """A refused swap: ``field`` (JSON key), a safe human ``message`` and a short ``error`` class."""

    def __init__(self, field: str, error: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.error = error
        self.message = message


class PricingUnavailable(Exception):
    """The ratio is 0 (empty treasury or no circulating ICY): no swap can be priced now."""


@dataclass(frozen=True)
class ValidatedSwap:
    icy_amount: int
    address: BtcAddress
    btc_amount: int
    service_fee: int

    @property
    def btc_address(self) -> str:
        return self.address.text


def parse_amount(field: str, value: object) -> int:
    """A positive decimal integer string (uint256); no sign, exponent, decimals or spaces."""
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise SwapRejected(field, "invalid_amount", f"{field} must be a positive decimal integer string")
    amount = int(value)
    if amount <= 0 or amount > UINT256_MAX:
        raise SwapRejected(field, "invalid_amount", f"{field} must be a positive decimal integer string")
    return amount


def sats_for_icy(icy_wei: int, ratio: int) -> int:
    """The sats an ``icy_wei`` amount is worth at ``ratio`` (ICY per BTC x 10^8), floored; needs ratio > 0."""
    if ratio <= 0:
        raise PricingUnavailable("ICY/BTC ratio is 0")
    return icy_wei // (ratio * 100)


def check_address(field: str, text: object, network: str) -> BtcAddress:
    if not isinstance(text, str):
        raise SwapRejected(field, "invalid_address", "btc_address must be a string")
    try:
        return parse_address(text, network)
    except InvalidAddress as exc:
        if exc.reason == "wrong_network":
            raise SwapRejected(
                field, "invalid_address", f"btc_address is not an address of the {network} network"
            ) from None
        if exc.reason == "unsupported":
            raise SwapRejected(field, "invalid_address", "btc_address type is not supported") from None
        raise SwapRejected(field, "invalid_address", "btc_address is not a valid Bitcoin address") from None


def check_payable(
    address: BtcAddress, btc_amount: int, fee_rate: Decimal, min_fee: int, field: str = "btc_amount"
) -> int:
    """Dust and fee checks for ``btc_amount`` paid to ``address``; returns the service fee."""
    dust = address.dust_limit
    if btc_amount < dust:
        raise SwapRejected(field, "amount_is_dust", "the BTC amount is below the dust limit for this address type")
    fee = service_fee(btc_amount, fee_rate, min_fee)
    if btc_amount - fee < dust:
        raise SwapRejected(
            field,
            "amount_below_fee",
            "the BTC amount does not cover the service fee plus the dust limit (see /api/v1/swap/info)",
        )
    return fee


def validate_signature_request(
    icy_amount: object,
    btc_address: object,
    btc_amount: object,
    *,
    network: str,
    fee_rate: Decimal,
    min_fee: int,
    ratio: int | None = None,
) -> ValidatedSwap:
    """Every check of ``POST /api/v1/swap/generate-signature``, in SPEC order; raises SwapRejected.

    With ``ratio=None`` the price check is left out (call :func:`check_price` once the ratio is known, so a
    malformed request is refused even while the oracle is down).
    """
    icy = parse_amount("icy_amount", icy_amount)
    sats = parse_amount("btc_amount", btc_amount)
    address = check_address("btc_address", btc_address, network)
    fee = check_payable(address, sats, fee_rate, min_fee)
    swap = ValidatedSwap(icy, address, sats, fee)
    if ratio is not None:
        check_price(swap, ratio)
    return swap


def check_price(swap: ValidatedSwap, ratio: int) -> None:
    """``btc_amount`` must not exceed the value of ``icy_amount`` at ``ratio`` by more than 1 %.

    Raises PricingUnavailable when ``ratio`` is 0 (no swap can be priced).
    """
    if ratio <= 0:
        raise PricingUnavailable("ICY/BTC ratio is 0")
    # sats <= icy / (R*100) * 101/100  <=>  sats * R * 100 * 100 <= icy * 101   (exact integers)
    if swap.btc_amount * ratio * 100 * TOLERANCE_DEN > swap.icy_amount * TOLERANCE_NUM:
        raise SwapRejected(
            "btc_amount",
            "amount_exceeds_value",
            "btc_amount exceeds the value of icy_amount at the current ICY/BTC rate (more than 1 % over)",
        )


def parse_swap_request(
    icy_amount: object, btc_address: object, *, network: str, min_icy: int
) -> tuple[int, BtcAddress]:
    """The I/O-free checks of ``POST /api/v1/swap``: ``icy_amount`` ≥ ``MIN_ICY_SWAP_AMOUNT`` (integer compare)
    and a valid address."""
    icy = parse_amount("icy_amount", icy_amount)
    if icy < min_icy:
        raise SwapRejected(
            "icy_amount", "amount_below_minimum", "icy_amount is below the minimum (see /api/v1/swap/info)"
        )
    return icy, check_address("btc_address", btc_address, network)


def price_swap_request(icy: int, address: BtcAddress, *, ratio: int, fee_rate: Decimal, min_fee: int) -> ValidatedSwap:
    """Convert ``icy`` at ``ratio`` and check that the result pays out above dust after the service fee."""
    sats = sats_for_icy(icy, ratio)
    fee = check_payable(address, sats, fee_rate, min_fee, field="icy_amount")
    return ValidatedSwap(icy, address, sats, fee)
