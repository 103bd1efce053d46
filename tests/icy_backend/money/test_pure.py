"""Pure money modules: addresses, EIP-712 signature, payout transaction building, wallet check."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
from embit import ec
from embit.networks import NETWORKS
from embit.script import p2pkh, p2sh, p2tr, p2wpkh, p2wsh
from embit.transaction import Transaction
from eth_abi.abi import encode
from eth_account import Account
from eth_utils.crypto import keccak

from icy_backend.domain.btc_address import InvalidAddress, parse_address
from icy_backend.domain.btc_tx import (
    CHANGE_DUST,
    BelowDust,
    BuiltTx,
    FeeCapExceeded,
    InsufficientFunds,
    NoFeeEstimate,
    Utxo,
    build_payout,
    build_replacement,
    fee_rate,
    parse_raw,
)
from icy_backend.domain.signature import DEADLINE_SECONDS, SwapSigner
from icy_backend.domain.wallet import WalletConfigError, check_wallet_matches_treasury, wallet_from_wif
from icy_backend.settings import Settings

SIGNER_KEY = "0x" + hashlib.sha256(b"icy test signer").hexdigest()
SWAP_CONTRACT = "0x" + "ab" * 20


def _key(seed: bytes) -> ec.PrivateKey:
    return ec.PrivateKey(hashlib.sha256(seed).digest())


def _addr(kind: str, network: str, seed: bytes = b"r") -> str:
    net = NETWORKS[{"mainnet": "main", "testnet": "test", "regtest": "regtest", "signet": "signet"}[network]]
    pub = _key(seed).get_public_key()
    script = {
        "p2pkh": lambda: p2pkh(pub),
        "p2sh": lambda: p2sh(p2wpkh(pub)),
        "p2wpkh": lambda: p2wpkh(pub),
        "p2wsh": lambda: p2wsh(p2pkh(pub)),
        "p2tr": lambda: p2tr(pub),
    }[kind]()
    return str(script.address(net))


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("kind", "dust"), [("p2pkh", 546), ("p2sh", 540), ("p2wpkh", 294), ("p2wsh", 330), ("p2tr", 330)]
)
@pytest.mark.parametrize("network", ["mainnet", "testnet", "regtest"])
def test_address_types_and_dust(kind: str, dust: int, network: str) -> None:
    text = _addr(kind, network)
    parsed = parse_address(text, network)
    assert parsed.type == kind
    assert parsed.dust_limit == dust


def test_known_mainnet_vectors() -> None:
    # BIP-173 / BIP-350 vectors and the genesis coinbase address.
    assert parse_address("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "mainnet").type == "p2wpkh"
    assert parse_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "mainnet").type == "p2pkh"
    taproot = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"
    assert parse_address(taproot, "mainnet").type == "p2tr"


@pytest.mark.parametrize(
    ("text", "network", "reason"),
    [
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "mainnet", "wrong_network"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "testnet", "wrong_network"),
        ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "testnet", "wrong_network"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", "mainnet", "malformed"),  # bad checksum
        ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb", "mainnet", "malformed"),
        ("", "mainnet", "malformed"),
        ("hello", "mainnet", "malformed"),
        ("bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mainnet", "malformed"),  # mixed case
    ],
)
def test_invalid_addresses(text: str, network: str, reason: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        parse_address(text, network)
    assert info.value.reason == reason


def test_bech32m_v0_program_is_refused() -> None:
    # A v1 program encoded with bech32 (not bech32m) is invalid per BIP-350.
    with pytest.raises(InvalidAddress):
        parse_address("bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx", "mainnet")


# ---------------------------------------------------------------- EIP-712 signature


def _independent_digest(
    chain_id: int, contract: str, icy: int, btc_address: str, sats: int, nonce: int, deadline: int
) -> bytes:
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text="ICY BTC SWAP"), keccak(text="1"), chain_id, contract],
        )
    )
    swap_type = keccak(
        text="Swap(uint256 icyAmount,string btcAddress,uint256 btcAmount,uint256 nonce,uint256 deadline)"
    )
    struct = keccak(
        encode(
            ["bytes32", "uint256", "bytes32", "uint256", "uint256", "uint256"],
            [swap_type, icy, keccak(text=btc_address), sats, nonce, deadline],
        )
    )
    return keccak(b"\x19\x01" + separator + struct)


def test_signature_matches_independent_eip712_and_recovers() -> None:
    signer = SwapSigner(SIGNER_KEY, 84532, SWAP_CONTRACT)
    btc_address = _addr("p2wpkh", "testnet")
    auth = signer.sign(5 * 10**18, btc_address, 12_345, now=1_700_000_000)
    assert auth.deadline == 1_700_000_000 + DEADLINE_SECONDS
    assert len(auth.signature) == 130
    assert not auth.signature.startswith("0x")
    assert int(auth.signature[-2:], 16) in (27, 28)
    digest = _independent_digest(84532, SWAP_CONTRACT, 5 * 10**18, btc_address, 12_345, auth.nonce, auth.deadline)
    assert signer.digest(5 * 10**18, btc_address, 12_345, auth.nonce, auth.deadline) == digest
    recovered = Account._recover_hash(digest, signature=auth.signature_bytes)
    assert recovered == Account.from_key(SIGNER_KEY).address == signer.address
    assert SIGNER_KEY[2:] not in repr(signer)


def test_nonces_are_fresh() -> None:
    signer = SwapSigner(SIGNER_KEY, 84532, SWAP_CONTRACT)
    nonces = {signer.sign(1, "x", 1).nonce for _ in range(50)}
    assert len(nonces) == 50
    assert max(nonces) > 2**200  # 256 random bits, not a timestamp


def test_other_chain_gives_other_signature() -> None:
    a = SwapSigner(SIGNER_KEY, 84532, SWAP_CONTRACT).sign(1, "x", 1, nonce=7, deadline=9)
    b = SwapSigner(SIGNER_KEY, 8453, SWAP_CONTRACT).sign(1, "x", 1, nonce=7, deadline=9)
    assert a.signature != b.signature


# ---------------------------------------------------------------- payout transaction

WIF = _key(b"payout wallet").wif(NETWORKS["test"])


def _utxo(n: int, value: int, confirmed: bool = True) -> Utxo:
    return Utxo(hashlib.sha256(b"coin%d" % n).hexdigest(), 0, value, confirmed)


def test_fee_rate_rounds_up_exactly() -> None:
    assert fee_rate({"6": 5.2}) == 6
    assert fee_rate({"6": 5.0}) == 5
    assert fee_rate({"6": 0.3}) == 1
    # A missing target falls back to the nearest smaller target present (a higher rate), never a larger one.
    assert fee_rate({"3": 10.0, "10": 2.0}) == 10
    assert fee_rate({"1": 30.0, "5": 7.5, "12": 3.0}, target=6) == 8
    assert fee_rate({"2": 15.0}, target=2) == 15
    with pytest.raises(NoFeeEstimate):
        fee_rate({"10": 3.0, "144": 1.0})
    with pytest.raises(NoFeeEstimate):
        fee_rate({})


def test_every_input_signals_replaceability() -> None:
    built = _build([_utxo(1, 300_000), _utxo(2, 300_000)], 450_000)
    assert isinstance(built, BuiltTx)
    tx = Transaction.parse(bytes.fromhex(built.raw_hex))
    assert len(tx.vin) == 2
    assert all(inp.sequence == 0xFFFFFFFD for inp in tx.vin)


def test_replacement_spends_every_input_of_the_first_and_pays_more() -> None:
    wallet = wallet_from_wif(WIF, "testnet")
    recipient = parse_address(_addr("p2wpkh", "testnet"), "testnet")
    first = [_utxo(1, 60_000)]
    old = build_replacement(
        wallet,
        recipient,
        50_000,
        first,
        [],
        sat_per_vbyte=5,
        old_fee=0,
        old_vsize=1,
        btc_usd=Decimal("60000"),
        max_fee_usd=Decimal("5"),
    )
    new = build_replacement(
        wallet,
        recipient,
        50_000,
        first,
        [_utxo(9, 100_000)],
        sat_per_vbyte=5,
        old_fee=old.fee,
        old_vsize=old.vsize,
        btc_usd=Decimal("60000"),
        max_fee_usd=Decimal("5"),
    )
    assert set(old.inputs) <= set(new.inputs)
    assert new.fee >= old.fee + new.vsize
    assert new.fee * old.vsize > old.fee * new.vsize  # a higher fee rate (BIP 125)
    tx = Transaction.parse(bytes.fromhex(new.raw_hex))
    assert tx.vout[0].value == 50_000
    # Not enough in the first coin for a bump to 120 sat/vB: it adds a coin rather than dropping one.
    big = build_replacement(
        wallet,
        recipient,
        50_000,
        first,
        [_utxo(9, 100_000)],
        sat_per_vbyte=120,
        old_fee=new.fee,
        old_vsize=new.vsize,
        btc_usd=Decimal("60000"),
        max_fee_usd=Decimal("50"),
    )
    assert big.inputs[0] == first[0].outpoint and len(big.inputs) == 2
    with pytest.raises(FeeCapExceeded):
        build_replacement(
            wallet,
            recipient,
            50_000,
            first,
            [_utxo(9, 100_000)],
            sat_per_vbyte=120,
            old_fee=new.fee,
            old_vsize=new.vsize,
            btc_usd=Decimal("60000"),
            max_fee_usd=Decimal("1"),
        )


def _build(utxos: list[Utxo], amount: int, **kw: object) -> object:
    wallet = wallet_from_wif(WIF, "testnet")
    recipient = parse_address(_addr("p2wpkh", "testnet"), "testnet")
    args: dict[str, object] = {"sat_per_vbyte": 5, "btc_usd": Decimal("60000"), "max_fee_usd": Decimal("5")}
    args.update(kw)
    return build_payout(wallet, recipient, amount, utxos, **args)  # type: ignore[arg-type]


def test_payout_with_change_signs_and_pays_the_estimated_fee() -> None:
    built = _build([_utxo(1, 50_000), _utxo(2, 200_000)], 100_000)
    tx = Transaction.parse(bytes.fromhex(built.raw_hex))  # type: ignore[attr-defined]
    assert len(tx.vin) == 1  # largest coin first
    assert [o.value for o in tx.vout] == [100_000, built.change]  # type: ignore[attr-defined]
    assert built.change == 200_000 - 100_000 - built.fee  # type: ignore[attr-defined]
    assert built.fee >= built.vsize * 5  # type: ignore[attr-defined]
    assert parse_raw(built.raw_hex) == (built.txid, built.inputs)  # type: ignore[attr-defined]


def test_change_never_below_dust() -> None:
    # 100_000 + fee(with change) leaves less than 294: no change output, remainder to the fee.
    fee_no_change = 110 * 5
    coin = 100_000 + fee_no_change + 300
    built = _build([_utxo(1, coin)], 100_000)
    tx = Transaction.parse(bytes.fromhex(built.raw_hex))  # type: ignore[attr-defined]
    assert len(tx.vout) == 1
    assert built.change == 0  # type: ignore[attr-defined]
    assert built.fee == coin - 100_000  # type: ignore[attr-defined]
    for extra in range(0, 2000, 37):
        b = _build([_utxo(1, 100_000 + extra + 600)], 100_000)
        assert b.change == 0 or b.change >= CHANGE_DUST  # type: ignore[attr-defined]


def test_unconfirmed_and_reserved_coins_are_not_selected() -> None:
    coins = [_utxo(1, 500_000, confirmed=False), _utxo(2, 400_000), _utxo(3, 300_000)]
    built = _build(coins, 100_000, reserved={coins[1].outpoint})
    assert built.inputs == (coins[2].outpoint,)  # type: ignore[attr-defined]
    with pytest.raises(InsufficientFunds):
        _build(coins, 100_000, reserved={coins[1].outpoint, coins[2].outpoint})


def test_fee_cap_uses_decimal_usd() -> None:
    # 1 input + 2 outputs ≈ 141 vB; at 100 sat/vB that is 14_100 sats = 8.46 USD at 60k.
    with pytest.raises(FeeCapExceeded):
        _build([_utxo(1, 1_000_000)], 100_000, sat_per_vbyte=100, max_fee_usd=Decimal("8"))
    built = _build([_utxo(1, 1_000_000)], 100_000, sat_per_vbyte=100, max_fee_usd=Decimal("9"))
    assert built.fee * Decimal("60000") / 10**8 <= Decimal("9")  # type: ignore[attr-defined]


def test_amount_below_recipient_dust_never_clears() -> None:
    with pytest.raises(BelowDust) as info:
        _build([_utxo(1, 1_000_000)], 293)
    assert info.value.clears is False


# ---------------------------------------------------------------- wallet


def test_wallet_matches_treasury_check() -> None:
    wallet = wallet_from_wif(WIF, "testnet")
    assert wallet.address.startswith("tb1q")
    ok = Settings(BTC_WALLET_WIF=WIF, BLOCKCHAIN_BTC_TREASURY_ADDRESS=wallet.address, BTC_NETWORK="testnet")
    check_wallet_matches_treasury(ok)
    bad = Settings(
        BTC_WALLET_WIF=WIF, BLOCKCHAIN_BTC_TREASURY_ADDRESS=_addr("p2wpkh", "testnet"), BTC_NETWORK="testnet"
    )
    with pytest.raises(WalletConfigError) as info:
        check_wallet_matches_treasury(bad)
    assert WIF not in str(info.value)
    assert wallet.address not in str(info.value)
    with pytest.raises(WalletConfigError):
        wallet_from_wif(WIF, "mainnet")
    with pytest.raises(WalletConfigError):
        wallet_from_wif("not a wif", "testnet")
