"""Swap validation without I/O (SPEC §9 "Swap signature", "Swap requests"): each check, its bound, its field,
error class and message, and the order in which the checks run."""

from __future__ import annotations

from decimal import Decimal

import pytest

from icy_backend.domain.btc_address import parse_address
from icy_backend.domain.swap_validation import (
    TOLERANCE_DEN,
    TOLERANCE_NUM,
    UINT256_MAX,
    PricingUnavailable,
    SwapRejected,
    ValidatedSwap,
    check_address,
    check_payable,
    check_price,
    parse_amount,
    parse_swap_request,
    price_swap_request,
    sats_for_icy,
    validate_signature_request,
)

P2WPKH_TEST = "tb1qsah2hee6q5u07rra6lpqcmkfhkkc7e7ysrpsup"  # dust 294
P2PKH_TEST = "mss46YN1ne9u6ar2jqyx1YFXd3m9D9c8Wr"  # dust 546
P2WPKH_MAIN = "bc1qsah2hee6q5u07rra6lpqcmkfhkkc7e7y696r8j"
V2_MAIN = "bc1zqqqqqqqqqqqqqqqqqqqqqqqqqqr3t3q4"  # a valid witness v2 address: not payable by us
AMOUNT_MSG = "{} must be a positive decimal integer string"
ZERO = Decimal(0)


def _rejected(info: pytest.ExceptionInfo[SwapRejected]) -> tuple[str, str, str]:
    exc = info.value
    assert str(exc) == exc.message
    return exc.field, exc.error, exc.message


def test_uint256_bound_and_tolerance_constants() -> None:
    assert UINT256_MAX == 115792089237316195423570985008687907853269984665640564039457584007913129639935
    assert (TOLERANCE_NUM, TOLERANCE_DEN) == (101, 100)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("007", 7), ("12345678901234567890", 12345678901234567890), (str(UINT256_MAX), UINT256_MAX)],
)
def test_parse_amount_accepts_positive_decimal_strings(text: str, value: int) -> None:
    assert parse_amount("icy_amount", text) == value


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "000",
        str(UINT256_MAX + 1),
        "9" * 78,
        "1" + "0" * 78,  # 79 digits
        "-1",
        "+1",
        "1.0",
        "1e3",
        " 1",
        "1 ",
        "",
        "0x10",
        "١٢",  # Arabic-Indic digits: int() would take them, the regex must not
        1,
        10**18,
        None,
        1.5,
        ["1"],
    ],
)
def test_parse_amount_refuses(value: object) -> None:
    with pytest.raises(SwapRejected) as info:
        parse_amount("btc_amount", value)
    assert _rejected(info) == ("btc_amount", "invalid_amount", AMOUNT_MSG.format("btc_amount"))


def test_sats_for_icy_is_floored_and_needs_a_ratio() -> None:
    # sats = wei / (R * 100), floored.
    assert sats_for_icy(10**18, 10**10) == 10**6
    assert sats_for_icy(10**18, 10**6) == 10**10
    assert sats_for_icy(999, 1) == 9
    assert sats_for_icy(1000, 1) == 10
    assert sats_for_icy(1099, 2) == 5
    assert sats_for_icy(0, 5) == 0
    assert sats_for_icy(5, 1) == 0
    for ratio in (0, -1):
        with pytest.raises(PricingUnavailable, match=r"^ICY/BTC ratio is 0$"):
            sats_for_icy(10**18, ratio)


def test_check_address_types_and_reasons() -> None:
    assert check_address("btc_address", P2WPKH_TEST, "testnet") == parse_address(P2WPKH_TEST, "testnet")
    assert check_address("btc_address", P2PKH_TEST, "testnet").type == "p2pkh"
    cases: list[tuple[object, str, str]] = [
        (12, "testnet", "btc_address must be a string"),
        (None, "testnet", "btc_address must be a string"),
        (P2WPKH_MAIN, "testnet", "btc_address is not an address of the testnet network"),
        (P2WPKH_TEST, "mainnet", "btc_address is not an address of the mainnet network"),
        (V2_MAIN, "mainnet", "btc_address type is not supported"),
        ("hello", "mainnet", "btc_address is not a valid Bitcoin address"),
        ("", "testnet", "btc_address is not a valid Bitcoin address"),
    ]
    for text, network, message in cases:
        with pytest.raises(SwapRejected) as info:
            check_address("addr_field", text, network)
        assert _rejected(info) == ("addr_field", "invalid_address", message)
        assert info.value.__cause__ is None


def test_check_payable_bounds() -> None:
    p2wpkh = parse_address(P2WPKH_TEST, "testnet")
    p2pkh = parse_address(P2PKH_TEST, "testnet")
    assert check_payable(p2wpkh, 294, ZERO, 0) == 0
    assert check_payable(p2pkh, 546, ZERO, 0) == 0
    assert check_payable(p2wpkh, 3294, Decimal("0.01"), 3000) == 3000  # 3294 - 3000 = 294: exactly dust
    assert check_payable(p2wpkh, 1_000_000, Decimal("0.01"), 3000) == 10_000
    dust_msg = "the BTC amount is below the dust limit for this address type"
    fee_msg = "the BTC amount does not cover the service fee plus the dust limit (see /api/v1/swap/info)"
    for address, amount, rate, min_fee, error, message in [
        (p2wpkh, 293, ZERO, 0, "amount_is_dust", dust_msg),
        (p2pkh, 545, ZERO, 0, "amount_is_dust", dust_msg),
        (p2pkh, 545, ZERO, 10**9, "amount_is_dust", dust_msg),  # the dust check comes first
        (p2wpkh, 3293, Decimal("0.01"), 3000, "amount_below_fee", fee_msg),
        (p2wpkh, 294, Decimal("0.01"), 1, "amount_below_fee", fee_msg),
    ]:
        with pytest.raises(SwapRejected) as info:
            check_payable(address, amount, rate, min_fee)
        assert _rejected(info) == ("btc_amount", error, message)
    with pytest.raises(SwapRejected) as info:
        check_payable(p2pkh, 1090, Decimal("0.5"), 0, field="icy_amount")
    assert _rejected(info) == ("icy_amount", "amount_below_fee", fee_msg)
    assert check_payable(p2pkh, 1091, Decimal("0.5"), 0) == 545


def _swap(icy: int, sats: int) -> ValidatedSwap:
    return ValidatedSwap(icy, parse_address(P2WPKH_TEST, "testnet"), sats, 0)


def test_check_price_allows_exactly_one_percent_over() -> None:
    # value of 10_000 wei at R = 1 is 100 sats; 1 % over is 101.
    check_price(_swap(10_000, 101), 1)
    check_price(_swap(10_000, 100), 1)
    check_price(_swap(10_000, 1), 1)
    check_price(_swap(10**22, 101 * 10**14), 10**4)  # 10^22 / 10^6 = 10^16 sats, +1 %
    over = "btc_amount exceeds the value of icy_amount at the current ICY/BTC rate (more than 1 % over)"
    for swap, ratio in [(_swap(10_000, 102), 1), (_swap(10_000, 51), 2), (_swap(10**22, 101 * 10**14 + 1), 10**4)]:
        with pytest.raises(SwapRejected) as info:
            check_price(swap, ratio)
        assert _rejected(info) == ("btc_amount", "amount_exceeds_value", over)
    check_price(_swap(20_000, 101), 2)
    for ratio in (0, -3):
        with pytest.raises(PricingUnavailable, match=r"^ICY/BTC ratio is 0$"):
            check_price(_swap(10_000, 1), ratio)


def test_validate_signature_request_returns_the_parsed_swap() -> None:
    swap = validate_signature_request(
        "5000000", P2WPKH_TEST, "50000", network="testnet", fee_rate=Decimal("0.01"), min_fee=3000, ratio=1
    )
    assert swap == ValidatedSwap(5_000_000, parse_address(P2WPKH_TEST, "testnet"), 50_000, 3000)
    assert swap.btc_address == P2WPKH_TEST
    assert swap.icy_amount == 5_000_000 and swap.btc_amount == 50_000 and swap.service_fee == 3000
    # Without a ratio the price is not checked: 1 wei for 50_000 sats passes here and fails with a ratio.
    unpriced = validate_signature_request(
        "1", P2WPKH_TEST, "50000", network="testnet", fee_rate=Decimal("0.01"), min_fee=3000
    )
    assert unpriced.btc_amount == 50_000
    with pytest.raises(SwapRejected) as info:
        validate_signature_request(
            "1", P2WPKH_TEST, "50000", network="testnet", fee_rate=Decimal("0.01"), min_fee=3000, ratio=1
        )
    assert info.value.error == "amount_exceeds_value"
    with pytest.raises(PricingUnavailable):
        validate_signature_request(
            "1", P2WPKH_TEST, "50000", network="testnet", fee_rate=Decimal("0.01"), min_fee=3000, ratio=0
        )


@pytest.mark.parametrize(
    ("icy", "address", "sats", "field", "error"),
    [
        ("x", "bad", "1", "icy_amount", "invalid_amount"),
        ("1", "bad", "x", "btc_amount", "invalid_amount"),
        ("1", "bad", "1", "btc_address", "invalid_address"),
        ("1", P2WPKH_TEST, "1", "btc_amount", "amount_is_dust"),
        ("1", P2WPKH_TEST, "3000", "btc_amount", "amount_below_fee"),
        ("1", P2WPKH_TEST, "3294", "btc_amount", "amount_exceeds_value"),
    ],
)
def test_validate_signature_request_reports_the_first_failure(
    icy: str, address: str, sats: str, field: str, error: str
) -> None:
    with pytest.raises(SwapRejected) as info:
        validate_signature_request(
            icy, address, sats, network="testnet", fee_rate=Decimal("0.01"), min_fee=3000, ratio=1
        )
    assert (info.value.field, info.value.error) == (field, error)


def test_parse_swap_request_minimum_is_inclusive() -> None:
    address = parse_address(P2WPKH_TEST, "testnet")
    assert parse_swap_request("100", P2WPKH_TEST, network="testnet", min_icy=100) == (100, address)
    assert parse_swap_request("101", P2WPKH_TEST, network="testnet", min_icy=100) == (101, address)
    with pytest.raises(SwapRejected) as info:
        parse_swap_request("99", P2WPKH_TEST, network="testnet", min_icy=100)
    assert _rejected(info) == (
        "icy_amount",
        "amount_below_minimum",
        "icy_amount is below the minimum (see /api/v1/swap/info)",
    )
    with pytest.raises(SwapRejected) as info:
        parse_swap_request("abc", P2WPKH_TEST, network="testnet", min_icy=100)
    assert _rejected(info) == ("icy_amount", "invalid_amount", AMOUNT_MSG.format("icy_amount"))
    with pytest.raises(SwapRejected) as info:
        parse_swap_request("100", P2WPKH_MAIN, network="testnet", min_icy=100)
    assert (info.value.field, info.value.error) == ("btc_address", "invalid_address")


def test_price_swap_request_converts_and_checks_dust_on_icy_amount() -> None:
    address = parse_address(P2WPKH_TEST, "testnet")
    swap = price_swap_request(5_000_099, address, ratio=1, fee_rate=Decimal("0.01"), min_fee=3000)
    assert swap == ValidatedSwap(5_000_099, address, 50_000, 3000)
    swap = price_swap_request(10**20, address, ratio=10**6, fee_rate=Decimal("0.01"), min_fee=3000)
    assert swap == ValidatedSwap(10**20, address, 10**12, 10**10)
    with pytest.raises(SwapRejected) as info:
        price_swap_request(329_399, address, ratio=1, fee_rate=Decimal("0.01"), min_fee=3000)  # 3293 sats
    assert (info.value.field, info.value.error) == ("icy_amount", "amount_below_fee")
    with pytest.raises(SwapRejected) as info:
        price_swap_request(29_399, address, ratio=1, fee_rate=ZERO, min_fee=0)  # 293 sats
    assert (info.value.field, info.value.error) == ("icy_amount", "amount_is_dust")
    with pytest.raises(PricingUnavailable):
        price_swap_request(10**20, address, ratio=0, fee_rate=ZERO, min_fee=0)
