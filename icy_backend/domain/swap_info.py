"""``GET /api/v1/swap/info`` (SPEC §9): balances, display rates and the minimum swap, tolerant of failures.

Inputs: the cached circulating ICY ``C`` (wei), treasury ``T`` (sats) and BTC price ``P`` (USD). Every rate is
computed with ``Fraction`` and rounded once when formatted; the display values may be floats, the rest exact.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from icy_backend.clients.errors import error_class
from icy_backend.domain.fees import DEFAULT_DUST, min_swap_sats
from icy_backend.domain.oracle import CirculatedIcy, OracleService, gather
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

SATS_PER_BTC = 10**8
WEI_PER_ICY = 10**18


def fixed(value: Fraction, places: int) -> str:
    """``value`` rounded (half to even) to ``places`` decimals, as a plain decimal string."""
    scaled = round(value * 10**places)
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(places + 1, "0")
    if places == 0:
        return sign + digits
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def satoshi_per_usd(price: Decimal) -> float:
    """10^8 / P floored to 2 decimals."""
    return float(Fraction(math.floor(Fraction(SATS_PER_BTC) / Fraction(price) * 100), 100))


def satoshi_usd_rate(price: Decimal) -> str:
    """USD per sat: P / 10^8 with 6 decimals."""
    return fixed(Fraction(price) / SATS_PER_BTC, 6)


def icy_satoshi(circulated_wei: int, treasury: int) -> Fraction:
    """Sats per 1 ICY: T * 10^18 / C (C > 0)."""
    return Fraction(treasury * WEI_PER_ICY, circulated_wei)


def min_icy_to_swap(
    circulated_wei: int, treasury: int, min_icy: int, rate: Decimal, min_fee: int, dust: int = DEFAULT_DUST
) -> int:
    """max(MIN_ICY_SWAP_AMOUNT, ceil(s_min * C / T)) in wei (T > 0), s_min = the smallest swap paying > dust."""
    s_min = min_swap_sats(rate, min_fee, dust)
    return max(min_icy, -(-(s_min * circulated_wei) // treasury))


@dataclass
class SwapInfo:
    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    all_failed: bool = False


async def _try(call: Any) -> tuple[Any, BaseException | None]:
    try:
        return await call(), None
    except Exception as exc:
        return None, exc


async def swap_info(oracle: OracleService, prices: Any, settings: Settings) -> SwapInfo:
    """Fetch C, T and P concurrently and build the response ``data``; failures become warnings."""
    (c_res, c_err), (t_res, t_err), (p_res, p_err) = await gather(
        lambda: _try(oracle.circulated_icy),
        lambda: _try(oracle.treasury_btc),
        lambda: _try(prices.btc_usd),
    )
    warnings: list[str] = []
    data: dict[str, Any] = {}
    for name, err in (("circulated ICY", c_err), ("treasury BTC", t_err), ("BTC price", p_err)):
        if err is not None:
            cls = error_class(err)
            log.warning("swap info: failed to get %s (%s)", name, cls)
            warnings.append(f"failed to get {name} ({cls})")

    circulated: CirculatedIcy | None = c_res
    treasury: int | None = t_res
    price: Decimal | None = p_res
    if circulated is not None:
        data["circulated_icy_balance"] = str(circulated.value)
        warnings.extend(circulated.warnings)
    if treasury is not None:
        data["satoshi_balance"] = str(treasury)
    if price is not None:
        data["satoshi_per_usd"] = satoshi_per_usd(price)
        data["satoshi_usd_rate"] = satoshi_usd_rate(price)
    if circulated is not None and treasury is not None:
        c, t = circulated.value, treasury
        if c == 0:
            warnings.append("circulating ICY is 0: icy_satoshi_rate and icy_usd_rate omitted")
        else:
            rate = icy_satoshi(c, t)
            data["icy_satoshi_rate"] = fixed(rate, 2)
            if price is not None:
                data["icy_usd_rate"] = fixed(rate * Fraction(price) / SATS_PER_BTC, 4)
        if t == 0:
            warnings.append("treasury BTC is 0: min_icy_to_swap omitted")
        else:
            data["min_icy_to_swap"] = str(
                min_icy_to_swap(
                    c,
                    t,
                    settings.MIN_ICY_SWAP_AMOUNT,
                    settings.BTC_SERVICE_FEE_PERCENTAGE,
                    settings.BTC_MIN_SATOSHI_FEE,
                )
            )
    data["service_fee_rate"] = float(settings.BTC_SERVICE_FEE_PERCENTAGE)
    data["min_satoshi_fee"] = str(settings.BTC_MIN_SATOSHI_FEE)
    if warnings:
        data["warnings"] = warnings
        data["partial_data"] = True
    return SwapInfo(data, warnings, all_failed=c_err is not None and t_err is not None and p_err is not None)


__all__ = [
    "SwapInfo",
    "fixed",
    "icy_satoshi",
    "min_icy_to_swap",
    "satoshi_per_usd",
    "satoshi_usd_rate",
    "swap_info",
]
