"""Build and sign payout transactions (SPEC §9 payouts steps 2 and 6): pure, no I/O.

Coin selection takes confirmed coins only, minus the ones reserved by candidates of unfinished payouts,
largest first. The fee is ``vbytes * ceil(fee_estimates[target])`` sats (the nearest smaller target when that
key is missing), computed for the exact output set; the network fee in USD (Decimal, ``fee * price / 10^8``)
must not exceed the cap. A change output is added only when it is at least the P2WPKH dust limit (fix: the old
code always added one, even of 0 sats, and nodes rejected the tx); otherwise the remainder goes to the fee.
Every input is a P2WPKH coin of the payout wallet, signals BIP 125 replaceability (``nSequence`` 0xfffffffd)
and is signed with BIP-143. A replacement (fee bump) spends every input of the payout's first candidate, may
add coins, and pays at least the old fee plus 1 sat/vB of its own size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from embit.script import Script, Witness, p2pkh_from_p2wpkh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from icy_backend.domain.btc_address import DUST_LIMITS, BtcAddress
from icy_backend.domain.wallet import PayoutWallet

FEE_TARGET = 6
RBF_SEQUENCE = 0xFFFFFFFD  # BIP 125: below 0xfffffffe signals replaceability
SATS_PER_BTC = 100_000_000
CHANGE_DUST = DUST_LIMITS["p2wpkh"]
# Weight units: version+locktime+counts (4·10) + segwit marker/flag (2); a P2WPKH input is 41 bytes of base
# data plus a witness of at most 1 + 1+72 + 1+33 bytes (embit grinds signatures short).
_TX_OVERHEAD_WU = 42
_P2WPKH_INPUT_WU = 41 * 4 + 108

Outpoint = tuple[str, int]


class PayoutBuildError(Exception):
    """Why a payout transaction could not be built. ``reason`` is the stored failure class."""

    reason = "build_error"
    clears = True  # whether the condition can clear by itself (row stays pending) or never (row fails)

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)


class InsufficientFunds(PayoutBuildError):
    reason = "insufficient_funds"


class FeeCapExceeded(PayoutBuildError):
    reason = "fee_cap_exceeded"


class NoFeeEstimate(PayoutBuildError):
    reason = "no_fee_estimate"


class BelowDust(PayoutBuildError):
    reason = "below_dust"
    clears = False


@dataclass(frozen=True)
class Utxo:
    """A coin of the payout wallet as Esplora lists it."""

    txid: str
    vout: int
    value: int
    confirmed: bool = True

    @property
    def outpoint(self) -> Outpoint:
        return (self.txid, self.vout)


@dataclass(frozen=True)
class BuiltTx:
    """A signed payout: raw hex, txid, the fee it pays and the coins it spends."""

    raw_hex: str
    txid: str
    fee: int
    amount: int
    change: int
    vsize: int
    inputs: tuple[Outpoint, ...]


def fee_rate(estimates: Mapping[str, float | int | Decimal | str], target: int = FEE_TARGET) -> int:
    """sat/vB for ``target`` blocks, rounded up to a whole sat (at least 1). A missing key falls back to the
    nearest smaller target present (a higher rate); none at all, or an unreadable value: NoFeeEstimate."""
    targets = sorted((int(k), v) for k, v in estimates.items() if str(k).isdigit() and int(k) <= target)
    if not targets:
        raise NoFeeEstimate("no fee estimate at or below the payout's confirmation target")
    value = targets[-1][1]
    try:
        # str() first so a float like 5.2 becomes Decimal("5.2") rather than its binary expansion.
        rate = Decimal(str(value))
    except ArithmeticError:
        raise NoFeeEstimate("unreadable fee estimate") from None
    if not rate.is_finite() or rate < 0:
        raise NoFeeEstimate("unreadable fee estimate")
    return max(1, math.ceil(rate))


def fee_usd(fee_sats: int, btc_usd: Decimal) -> Decimal:
    return Decimal(fee_sats) * btc_usd / SATS_PER_BTC


def output_size(script_pubkey: bytes) -> int:
    """Serialized size of an output: value (8) + script length (1) + script."""
    return 8 + 1 + len(script_pubkey)


def estimate_vsize(n_inputs: int, output_scripts: Iterable[bytes]) -> int:
    weight = _TX_OVERHEAD_WU + n_inputs * _P2WPKH_INPUT_WU + 4 * sum(output_size(s) for s in output_scripts)
    return (weight + 3) // 4


def build_payout(
    wallet: PayoutWallet,
    recipient: BtcAddress,
    amount: int,
    utxos: Iterable[Utxo],
    *,
    sat_per_vbyte: int,
    btc_usd: Decimal,
    max_fee_usd: Decimal,
    reserved: frozenset[Outpoint] | set[Outpoint] = frozenset(),
) -> BuiltTx:
    """Select coins, enforce the fee cap, add change only above dust, and sign every input (BIP-143)."""
    if amount < recipient.dust_limit:
        raise BelowDust("amount below the recipient's dust limit")
    coins = sorted(
        (u for u in utxos if u.confirmed and u.outpoint not in reserved and u.value > 0),
        key=lambda u: (-u.value, u.txid, u.vout),
    )
    change_script = wallet.script_pubkey
    selected: list[Utxo] = []
    total = 0
    capped = False
    for coin in coins:
        selected.append(coin)
        total += coin.value
        n = len(selected)
        base_fee = estimate_vsize(n, [recipient.script_pubkey]) * sat_per_vbyte
        if fee_usd(base_fee, btc_usd) > max_fee_usd:
            # More inputs only make the fee larger.
            raise FeeCapExceeded("network fee above BTC_MAX_TX_FEE_USD")
        fee_with_change = estimate_vsize(n, [recipient.script_pubkey, change_script]) * sat_per_vbyte
        change = total - amount - fee_with_change
        if change >= CHANGE_DUST and fee_usd(fee_with_change, btc_usd) <= max_fee_usd:
            return _sign(wallet, recipient, amount, selected, fee_with_change, change)
        leftover = total - amount
        if leftover >= base_fee:
            # No change output: the remainder (too small for a change output) goes to the miners.
            if fee_usd(leftover, btc_usd) <= max_fee_usd:
                return _sign(wallet, recipient, amount, selected, leftover, 0)
            capped = True
    if capped:
        raise FeeCapExceeded("network fee above BTC_MAX_TX_FEE_USD")
    raise InsufficientFunds("not enough confirmed coins")


def build_replacement(
    wallet: PayoutWallet,
    recipient: BtcAddress,
    amount: int,
    required: Sequence[Utxo],
    extra: Iterable[Utxo],
    *,
    sat_per_vbyte: int,
    old_fee: int,
    old_vsize: int,
    btc_usd: Decimal,
    max_fee_usd: Decimal,
) -> BuiltTx:
    """A fee bump (SPEC §9 step 6): spends every coin of ``required`` (the first candidate's inputs) plus, when
    needed, confirmed coins of ``extra``; pays the same ``amount`` to ``recipient``; its fee is at least
    ``old_fee`` + 1 sat/vB of its own size, at least ``sat_per_vbyte``, and at a rate above the old one (BIP 125);
    the difference comes out of the change. Raises FeeCapExceeded at the cap, InsufficientFunds without coins."""
    if amount < recipient.dust_limit:
        raise BelowDust("amount below the recipient's dust limit")
    if not required:
        raise ValueError("a replacement needs the first candidate's inputs")
    old_rate = -(-old_fee // max(1, old_vsize))  # ceil
    rate = max(sat_per_vbyte, old_rate + 1)
    pool = sorted(
        (u for u in extra if u.confirmed and u.value > 0 and u.outpoint not in {r.outpoint for r in required}),
        key=lambda u: (-u.value, u.txid, u.vout),
    )
    selected = list(required)
    change_script = wallet.script_pubkey

    def needed(vsize: int) -> int:
        return max(old_fee + vsize, vsize * rate)

    while True:
        total = sum(c.value for c in selected)
        n = len(selected)
        base_fee = needed(estimate_vsize(n, [recipient.script_pubkey]))
        if fee_usd(base_fee, btc_usd) > max_fee_usd:
            raise FeeCapExceeded("replacement fee above BTC_MAX_TX_FEE_USD")
        fee_with_change = needed(estimate_vsize(n, [recipient.script_pubkey, change_script]))
        change = total - amount - fee_with_change
        if change >= CHANGE_DUST and fee_usd(fee_with_change, btc_usd) <= max_fee_usd:
            return _sign(wallet, recipient, amount, selected, fee_with_change, change)
        leftover = total - amount
        if leftover >= base_fee:
            if fee_usd(leftover, btc_usd) <= max_fee_usd:
                return _sign(wallet, recipient, amount, selected, leftover, 0)
            if not pool:
                raise FeeCapExceeded("replacement fee above BTC_MAX_TX_FEE_USD")
        if not pool:
            raise InsufficientFunds("not enough confirmed coins for the replacement")
        selected.append(pool.pop(0))


def _sign(
    wallet: PayoutWallet, recipient: BtcAddress, amount: int, coins: list[Utxo], fee: int, change: int
) -> BuiltTx:
    vout = [TransactionOutput(amount, Script(recipient.script_pubkey))]
    if change:
        vout.append(TransactionOutput(change, Script(wallet.script_pubkey)))
    vin = [TransactionInput(bytes.fromhex(c.txid), c.vout, sequence=RBF_SEQUENCE) for c in coins]
    tx = Transaction(version=2, vin=vin, vout=vout, locktime=0)
    script_code = p2pkh_from_p2wpkh(Script(wallet.script_pubkey))
    pubkey = wallet.key.get_public_key().sec()
    for i, coin in enumerate(coins):
        digest = tx.sighash_segwit(i, script_code, coin.value, sighash=SIGHASH.ALL)
        signature = wallet.key.sign(digest).serialize() + bytes([SIGHASH.ALL])
        tx.vin[i].witness = Witness([signature, pubkey])
    raw = tx.serialize()
    witness_bytes = 2 + sum(len(inp.witness.serialize()) for inp in tx.vin)
    weight = (len(raw) - witness_bytes) * 4 + witness_bytes
    return BuiltTx(
        raw_hex=raw.hex(),
        txid=str(tx.txid().hex()),
        fee=fee,
        amount=amount,
        change=change,
        vsize=(weight + 3) // 4,
        inputs=tuple(c.outpoint for c in coins),
    )


def parse_raw(raw_hex: str) -> tuple[str, tuple[Outpoint, ...]]:
    """The txid and spent outpoints of a stored raw transaction."""
    tx = Transaction.parse(bytes.fromhex(raw_hex))
    return str(tx.txid().hex()), tuple((inp.txid.hex(), int(inp.vout)) for inp in tx.vin)


def raw_vsize(raw_hex: str) -> int:
    """Virtual size of a stored raw segwit transaction."""
    tx = Transaction.parse(bytes.fromhex(raw_hex))
    raw = tx.serialize()
    witness_bytes = 2 + sum(len(inp.witness.serialize()) for inp in tx.vin) if tx.is_segwit else 0
    weight = (len(raw) - witness_bytes) * 4 + witness_bytes
    return (weight + 3) // 4
