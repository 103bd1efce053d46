"""Payout transaction edges (SPEC §9 payouts steps 2 and 6): the exact fee at each boundary of the change, leftover
and fee-cap branches, coin filtering and order, the bump rate, the encoded transaction and its virtual size."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
from embit import ec
from embit.networks import NETWORKS
from embit.script import Script, Witness, p2wpkh
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from icy_backend.domain.btc_address import BtcAddress, parse_address
from icy_backend.domain.btc_tx import (
    CHANGE_DUST,
    FEE_TARGET,
    RBF_SEQUENCE,
    SATS_PER_BTC,
    BelowDust,
    BuiltTx,
    FeeCapExceeded,
    InsufficientFunds,
    NoFeeEstimate,
    PayoutBuildError,
    Utxo,
    build_payout,
    build_replacement,
    estimate_vsize,
    fee_rate,
    fee_usd,
    output_size,
    parse_raw,
    raw_vsize,
)
from icy_backend.domain.wallet import PayoutWallet, wallet_from_wif

WIF = ec.PrivateKey(hashlib.sha256(b"edge payout wallet").digest()).wif(NETWORKS["test"])
RECIPIENT_KEY = ec.PrivateKey(hashlib.sha256(b"edge recipient").digest()).get_public_key()
RECIPIENT_TEXT = str(p2wpkh(RECIPIENT_KEY).address(NETWORKS["test"]))
USD = Decimal("60000")  # 1 sat = 0.0006 USD
BIG_CAP = Decimal("1000")
AMOUNT = 100_000
# vsizes of P2WPKH spends: inputs x outputs (see estimate_vsize)
V11, V12, V21, V22 = 110, 141, 178, 209


def _wallet() -> PayoutWallet:
    return wallet_from_wif(WIF, "testnet")


def _recipient() -> BtcAddress:
    return parse_address(RECIPIENT_TEXT, "testnet")


def _coin(n: int, value: int, confirmed: bool = True) -> Utxo:
    return Utxo(hashlib.sha256(b"edge coin %d" % n).hexdigest(), n % 3, value, confirmed)


def _pay(coins: list[Utxo], amount: int = AMOUNT, *, rate: int = 5, cap: Decimal = BIG_CAP) -> BuiltTx:
    return build_payout(_wallet(), _recipient(), amount, coins, sat_per_vbyte=rate, btc_usd=USD, max_fee_usd=cap)


def _bump(
    required: list[Utxo],
    extra: list[Utxo],
    *,
    amount: int = AMOUNT,
    rate: int = 1,
    old_fee: int = 0,
    old_vsize: int = 1,
    cap: Decimal = BIG_CAP,
) -> BuiltTx:
    return build_replacement(
        _wallet(),
        _recipient(),
        amount,
        required,
        extra,
        sat_per_vbyte=rate,
        old_fee=old_fee,
        old_vsize=old_vsize,
        btc_usd=USD,
        max_fee_usd=cap,
    )


def _independent_vsize(raw_hex: str) -> int:
    """BIP 141 by hand: weight = 3 x size without witnesses + full size; vsize = ceil(weight / 4)."""
    tx = Transaction.parse(bytes.fromhex(raw_hex))
    full = len(tx.serialize())
    for inp in tx.vin:
        inp.witness = Witness([])
    stripped = len(tx.serialize())
    return -(-(3 * stripped + full) // 4)


def _check_encoding(built: BuiltTx, coins: list[Utxo], amount: int, fee: int, change: int) -> Transaction:
    tx = Transaction.parse(bytes.fromhex(built.raw_hex))
    assert (built.amount, built.fee, built.change) == (amount, fee, change)
    assert tx.version == 2 and tx.locktime == 0
    assert built.inputs == tuple(c.outpoint for c in coins)
    assert [(i.txid.hex(), i.vout, i.sequence) for i in tx.vin] == [(c.txid, c.vout, RBF_SEQUENCE) for c in coins]
    outs = [(o.value, o.script_pubkey.data) for o in tx.vout]
    expected = [(amount, _recipient().script_pubkey)]
    if change:
        expected.append((change, _wallet().script_pubkey))
    assert outs == expected
    assert sum(c.value for c in coins) - sum(o.value for o in tx.vout) == fee
    assert built.txid == tx.txid().hex()
    assert built.vsize == _independent_vsize(built.raw_hex) == raw_vsize(built.raw_hex)
    assert parse_raw(built.raw_hex) == (built.txid, built.inputs)
    # Every input is signed with SIGHASH_ALL over its own amount by the wallet key.
    script_code = Script(b"\x76\xa9\x14" + _wallet().script_pubkey[2:] + b"\x88\xac")
    for i, coin in enumerate(coins):
        sig, pub = tx.vin[i].witness.items
        assert sig[-1] == 1 and pub == _wallet().key.get_public_key().sec()
        digest = tx.sighash_segwit(i, script_code, coin.value, sighash=1)
        assert _wallet().key.get_public_key().verify(ec.Signature.parse(sig[:-1]), digest)
    return tx


# ---------------------------------------------------------------- small pure helpers


def test_constants_and_sizes() -> None:
    assert (FEE_TARGET, RBF_SEQUENCE, SATS_PER_BTC, CHANGE_DUST) == (6, 0xFFFFFFFD, 100_000_000, 294)
    assert output_size(b"") == 9
    assert output_size(bytes(22)) == 31
    assert output_size(bytes(34)) == 43
    p2wpkh_script = bytes(22)
    assert estimate_vsize(0, []) == 11  # ceil(42 / 4)
    assert estimate_vsize(1, [p2wpkh_script]) == V11
    assert estimate_vsize(1, [p2wpkh_script, p2wpkh_script]) == V12
    assert estimate_vsize(2, [p2wpkh_script]) == V21
    assert estimate_vsize(2, [p2wpkh_script, p2wpkh_script]) == V22
    assert estimate_vsize(1, [bytes(34)]) == 122  # ceil((42 + 272 + 4 * 43) / 4)
    assert fee_usd(550, USD) == Decimal("0.33")
    assert fee_usd(1, Decimal("100000000")) == 1


def test_fee_rate_edges_and_messages() -> None:
    assert fee_rate({"6": 0}) == 1
    assert fee_rate({"6": "0.0001"}) == 1
    assert fee_rate({"6": Decimal("7")}) == 7
    assert fee_rate({"6": "7.01"}) == 8
    assert fee_rate({6: 4}) == 4  # type: ignore[dict-item]
    assert fee_rate({"6": 3, "x": 99, "": 99}) == 3
    assert fee_rate({"7": 1.0, "2": 9.0}, target=7) == 1
    for bad in ("-1", "-0.5", "nan", "inf", "-inf"):
        with pytest.raises(NoFeeEstimate) as info:
            fee_rate({"6": bad})
        assert str(info.value) == "unreadable fee estimate"
    with pytest.raises(NoFeeEstimate) as info:
        fee_rate({"6": "fast"})
    assert str(info.value) == "unreadable fee estimate" and info.value.__cause__ is None
    with pytest.raises(NoFeeEstimate) as info:
        fee_rate({"7": 1.0})
    assert str(info.value) == "no fee estimate at or below the payout's confirmation target"


def test_build_errors_carry_their_reason_and_detail() -> None:
    assert str(PayoutBuildError()) == "build_error"
    assert str(InsufficientFunds()) == "insufficient_funds"
    assert str(FeeCapExceeded("")) == "fee_cap_exceeded"
    assert str(NoFeeEstimate()) == "no_fee_estimate"
    assert str(BelowDust()) == "below_dust"
    assert str(InsufficientFunds("detail")) == "detail"
    assert [e.clears for e in (InsufficientFunds(), FeeCapExceeded(), NoFeeEstimate(), BelowDust())] == [
        True,
        True,
        True,
        False,
    ]


# ---------------------------------------------------------------- build_payout


def test_payout_of_exactly_the_dust_limit_is_built() -> None:
    coin = _coin(1, 10_000)
    built = _pay([coin], amount=294)
    _check_encoding(built, [coin], 294, V12 * 5, 10_000 - 294 - V12 * 5)
    with pytest.raises(BelowDust) as info:
        _pay([coin], amount=293)
    assert str(info.value) == "amount below the recipient's dust limit"


def test_change_of_exactly_the_dust_limit_is_kept() -> None:
    coin = _coin(1, AMOUNT + V12 * 5 + CHANGE_DUST)
    _check_encoding(_pay([coin]), [coin], AMOUNT, V12 * 5, CHANGE_DUST)
    coin = _coin(1, AMOUNT + V12 * 5 + CHANGE_DUST - 1)  # one sat less: no change, it all goes to the fee
    _check_encoding(_pay([coin]), [coin], AMOUNT, V12 * 5 + CHANGE_DUST - 1, 0)


def test_leftover_of_exactly_the_base_fee_pays_without_change() -> None:
    coin = _coin(1, AMOUNT + V11 * 5)
    _check_encoding(_pay([coin]), [coin], AMOUNT, V11 * 5, 0)
    with pytest.raises(InsufficientFunds) as info:
        _pay([_coin(1, AMOUNT + V11 * 5 - 1)])
    assert str(info.value) == "not enough confirmed coins"


def test_fee_cap_is_inclusive_on_every_branch() -> None:
    # No change: the base fee of 550 sats is 0.33 USD; a cap of exactly 0.33 allows it.
    coin = _coin(1, AMOUNT + V11 * 5)
    _check_encoding(_pay([coin], cap=Decimal("0.33")), [coin], AMOUNT, V11 * 5, 0)
    with pytest.raises(FeeCapExceeded) as info:
        _pay([coin], cap=Decimal("0.3299"))
    assert str(info.value) == "network fee above BTC_MAX_TX_FEE_USD"
    # With change: 705 sats = 0.423 USD, exactly the cap.
    big = _coin(2, 1_000_000)
    _check_encoding(_pay([big], cap=Decimal("0.423")), [big], AMOUNT, V12 * 5, 1_000_000 - AMOUNT - V12 * 5)
    # Leftover fee above the cap while the base fee is not: refused once no coin is left.
    over = _coin(3, AMOUNT + 600)  # 600 sats = 0.36 USD
    with pytest.raises(FeeCapExceeded) as info:
        _pay([over], cap=Decimal("0.35"))
    assert str(info.value) == "network fee above BTC_MAX_TX_FEE_USD"
    _check_encoding(_pay([over], cap=Decimal("0.36")), [over], AMOUNT, 600, 0)


def test_the_base_fee_scales_with_the_rate() -> None:
    coin = _coin(1, AMOUNT + V11 * 7)
    _check_encoding(_pay([coin], rate=7), [coin], AMOUNT, V11 * 7, 0)
    with pytest.raises(InsufficientFunds):
        _pay([_coin(1, AMOUNT + V11 * 7 - 1)], rate=7)


def test_empty_and_dust_coins_are_not_selected() -> None:
    # One short coin: not enough. With a 0-sat coin as well the answer is the same (never selected);
    # selecting it would grow the fee of two inputs (890 sats = 0.534 USD) over the 0.4 USD cap.
    short = _coin(1, 1000)
    with pytest.raises(InsufficientFunds):
        _pay([short, _coin(2, 0)], cap=Decimal("0.4"))
    # A 1-sat coin is a coin: it is tried, and two inputs break the cap.
    with pytest.raises(FeeCapExceeded):
        _pay([short, _coin(2, 1)], cap=Decimal("0.4"))


def test_coins_are_taken_largest_first_with_a_stable_tie_break() -> None:
    a, b, c = _coin(1, 60_000), _coin(2, 60_000), _coin(3, 70_000)
    built = _pay([a, b, c])
    first = min(a, b, key=lambda u: (u.txid, u.vout))
    _check_encoding(built, [c, first], AMOUNT, V22 * 5, 130_000 - AMOUNT - V22 * 5)


# ---------------------------------------------------------------- build_replacement


def test_replacement_rate_is_one_above_the_ceiled_old_rate() -> None:
    coin = _coin(1, 1_000_000)
    # old rate ceil(1001 / 100) = 11 -> 12 sat/vB; floor (10) or a float (10.01) would give less.
    built = _bump([coin], [], rate=1, old_fee=1001, old_vsize=100)
    _check_encoding(built, [coin], AMOUNT, V12 * 12, 1_000_000 - AMOUNT - V12 * 12)
    # old_vsize 1 is taken as 1: rate 10 + 1.
    built = _bump([coin], [], rate=1, old_fee=10, old_vsize=1)
    assert built.fee == V12 * 11
    # old_vsize 0 counts as 1 too.
    assert _bump([coin], [], rate=1, old_fee=10, old_vsize=0).fee == V12 * 11
    # The current estimate wins when higher.
    assert _bump([coin], [], rate=20, old_fee=1001, old_vsize=100).fee == V12 * 20


def test_replacement_pays_at_least_the_old_fee_plus_its_own_size() -> None:
    coin = _coin(1, 1_000_000)
    # old fee 10_000 over 1000 vB: rate 11 gives 1551 on 141 vB, but it must pay 10_000 + 141.
    built = _bump([coin], [], rate=1, old_fee=10_000, old_vsize=1000)
    _check_encoding(built, [coin], AMOUNT, 10_141, 1_000_000 - AMOUNT - 10_141)


def test_replacement_without_change_gives_the_leftover_to_the_fee() -> None:
    # rate 2: base fee 220, with change 282; a leftover of 300 cannot carry a 294-sat change output.
    coin = _coin(1, AMOUNT + 300)
    _check_encoding(_bump([coin], [], rate=2), [coin], AMOUNT, 300, 0)
    exact = _coin(1, AMOUNT + 220)
    _check_encoding(_bump([exact], [], rate=2), [exact], AMOUNT, 220, 0)
    with pytest.raises(InsufficientFunds) as info:
        _bump([_coin(1, AMOUNT + 219)], [], rate=2)
    assert str(info.value) == "not enough confirmed coins for the replacement"
    # Change of exactly the dust limit is kept.
    dusty = _coin(1, AMOUNT + 282 + CHANGE_DUST)
    _check_encoding(_bump([dusty], [], rate=2), [dusty], AMOUNT, 282, CHANGE_DUST)


def test_replacement_fee_cap_is_inclusive() -> None:
    exact = _coin(1, AMOUNT + 220)  # 220 sats = 0.132 USD
    _check_encoding(_bump([exact], [], rate=2, cap=Decimal("0.132")), [exact], AMOUNT, 220, 0)
    with pytest.raises(FeeCapExceeded) as info:
        _bump([exact], [], rate=2, cap=Decimal("0.1319"))
    assert str(info.value) == "replacement fee above BTC_MAX_TX_FEE_USD"
    big = _coin(2, 1_000_000)  # with change: 282 sats = 0.1692 USD
    _check_encoding(_bump([big], [], rate=2, cap=Decimal("0.1692")), [big], AMOUNT, 282, 1_000_000 - AMOUNT - 282)


def test_replacement_leftover_above_the_cap_adds_a_coin_or_stops() -> None:
    # A leftover of 575 sats (0.345 USD, one short of change) is over a 0.3 USD cap; the base fee
    # (220 = 0.132 USD) is not.
    coin = _coin(1, AMOUNT + 282 + CHANGE_DUST - 1)
    with pytest.raises(FeeCapExceeded) as info:
        _bump([coin], [], rate=2, cap=Decimal("0.3"))
    assert str(info.value) == "replacement fee above BTC_MAX_TX_FEE_USD"
    extra = _coin(2, 50_000)
    built = _bump([coin], [extra], rate=2, cap=Decimal("0.3"))
    total = coin.value + extra.value
    _check_encoding(built, [coin, extra], AMOUNT, V22 * 2, total - AMOUNT - V22 * 2)


def test_replacement_takes_extra_coins_largest_first_and_only_good_ones() -> None:
    required = _coin(1, 60_000)
    small, big = _coin(2, 10_000), _coin(3, 500_000)
    unconfirmed = _coin(4, 900_000, confirmed=False)
    built = _bump([required], [small, unconfirmed, required, big])
    _check_encoding(built, [required, big], AMOUNT, V22 * 1, 560_000 - AMOUNT - V22)
    tie_a, tie_b = _coin(5, 70_000), _coin(6, 70_000)
    first = min(tie_a, tie_b, key=lambda u: (u.txid, u.vout))
    built = _bump([required], [tie_b, tie_a, small])
    _check_encoding(built, [required, first], AMOUNT, V22, 130_000 - AMOUNT - V22)


def test_replacement_ignores_empty_coins_but_not_one_sat_coins() -> None:
    required = _coin(1, 1000)
    # Two inputs at 5 sat/vB cost 890 sats = 0.534 USD: over a 0.4 USD cap. A 0-sat coin is never tried.
    with pytest.raises(InsufficientFunds):
        _bump([required], [_coin(2, 0)], rate=5, cap=Decimal("0.4"))
    with pytest.raises(FeeCapExceeded):
        _bump([required], [_coin(2, 1)], rate=5, cap=Decimal("0.4"))


def test_replacement_preconditions() -> None:
    with pytest.raises(BelowDust) as info:
        _bump([_coin(1, 10_000)], [], amount=293)
    assert str(info.value) == "amount below the recipient's dust limit"
    coin = _coin(1, 10_000)
    _check_encoding(_bump([coin], [], amount=294), [coin], 294, V12, 10_000 - 294 - V12)
    with pytest.raises(ValueError, match=r"^a replacement needs the first candidate's inputs$"):
        _bump([], [_coin(2, 10_000)])


# ---------------------------------------------------------------- encoding


def test_vsize_matches_bip141_for_several_shapes() -> None:
    seen_remainders = set()
    for n in range(1, 5):
        coins = [_coin(10 + i, 40_000 + i) for i in range(n)]
        for amount in (30_000 * n, 40_000 * n - 2000):
            built = _pay(coins, amount=amount)
            tx = Transaction.parse(bytes.fromhex(built.raw_hex))
            full = len(tx.serialize())
            weight = 3 * (full - 2 - sum(len(i.witness.serialize()) for i in tx.vin)) + full
            seen_remainders.add(weight % 4)
            assert built.vsize == _independent_vsize(built.raw_hex) == raw_vsize(built.raw_hex)
            assert built.vsize <= estimate_vsize(len(built.inputs), [bytes(22)] * len(tx.vout))
    assert 0 in seen_remainders  # the ceiling is exercised where it matters


def test_raw_vsize_of_a_legacy_transaction_is_its_length() -> None:
    tx = Transaction(
        vin=[TransactionInput(bytes(32), 0, script_sig=Script(b"\x00"), sequence=RBF_SEQUENCE)],
        vout=[TransactionOutput(1000, Script(bytes(22)))],
    )
    raw = tx.serialize()
    assert not tx.is_segwit
    assert raw_vsize(raw.hex()) == len(raw)
