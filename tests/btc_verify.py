"""Independent re-verification of Bitcoin transactions with bitcoinlib (neither embit, the service's signer, nor
the simulator's own ``btc_rules``), used by tests and by the session-wide check in ``tests/conftest.py``."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # bitcoinlib's import leaves a file open and uses a deprecated SQLAlchemy call (its wallet database, unused).
    warnings.simplefilter("ignore")
    from bitcoinlib.transactions import Transaction  # type: ignore[import-untyped]

NETWORKS = {"testnet": "testnet", "mainnet": "bitcoin", "signet": "signet", "regtest": "regtest"}
RBF_MAX_SEQUENCE = 0xFFFFFFFD


class VerificationError(AssertionError):
    """The transaction does not verify."""


@dataclass(frozen=True)
class VerifiedTx:
    txid: str
    fee: int  # inputs − outputs, sats
    outputs: list[tuple[str | None, int]]  # (address, sats) in order
    signals_rbf: bool  # every input's nSequence <= 0xFFFFFFFD (BIP 125)


def verify_tx(raw_hex: str, prevouts: list[tuple[int, str]], network: str = "testnet") -> VerifiedTx:
    """Check every input's P2WPKH signature against its prevout (value, scriptPubKey hex); raise if one fails."""
    tx: Any = Transaction.parse_hex(raw_hex, network=NETWORKS[network])
    if len(tx.inputs) != len(prevouts):
        raise VerificationError(f"{len(tx.inputs)} inputs but {len(prevouts)} prevouts")
    for n, (inp, (value, script_hex)) in enumerate(zip(tx.inputs, prevouts, strict=True)):
        script = bytes.fromhex(script_hex)
        if len(script) != 22 or script[:2] != b"\x00\x14":
            raise VerificationError(f"input {n}: prevout is not P2WPKH")
        witnesses = [bytes(w) for w in inp.witnesses]
        if len(witnesses) != 2:
            raise VerificationError(f"input {n}: P2WPKH witness must be [signature, pubkey]")
        if hashlib.new("ripemd160", hashlib.sha256(witnesses[1]).digest()).digest() != script[2:]:
            raise VerificationError(f"input {n}: public key does not match the prevout's key hash")
        if bytes(inp.unlocking_script or b""):
            raise VerificationError(f"input {n}: native segwit input with a scriptSig")
        inp.value = value
    if not tx.verify():
        raise VerificationError(f"signature check failed for {tx.txid}")
    outputs = [(o.address or None, int(o.value)) for o in tx.outputs]
    fee = sum(v for v, _ in prevouts) - sum(v for _, v in outputs)
    if fee < 0:
        raise VerificationError(f"outputs exceed inputs by {-fee} sats")
    signals = all(int(i.sequence) <= RBF_MAX_SEQUENCE for i in tx.inputs)
    return VerifiedTx(str(tx.txid), fee, outputs, signals)


def verify_record_file(path: Path) -> tuple[int, list[str]]:
    """Re-verify every transaction recorded by the simulators (one JSON line each); (count, failures)."""
    if not path.exists():
        return 0, []
    seen: set[str] = set()
    failures: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        raw: str = record["raw"]
        if raw in seen:
            continue
        seen.add(raw)
        try:
            verify_tx(raw, [(int(v), str(s)) for v, s in record["prevouts"]])
        except Exception as exc:  # a library error on our bytes is a failure too
            failures.append(f"{raw[:80]}…: {exc!r}")
    return len(seen), failures


def payout_problems(
    raw_hex: str, prevouts: list[tuple[int, str]], *, txid: str, fee: int, address: str, total: int
) -> list[str]:
    """What is wrong with a payout candidate, judged by bitcoinlib: signatures, RBF signal on every input,
    fee = inputs − outputs equal to the stored fee, exactly one output paying ``total`` to ``address``."""
    try:
        tx = verify_tx(raw_hex, prevouts)
    except Exception as exc:
        return [f"{txid}: {exc!r}"]
    problems = []
    if tx.txid != txid:
        problems.append(f"{txid}: raw transaction has txid {tx.txid}")
    if not tx.signals_rbf:
        problems.append(f"{txid}: an input does not signal BIP 125 replaceability")
    if tx.fee != fee:
        problems.append(f"{txid}: fee is {tx.fee} (inputs − outputs), the row says {fee}")
    paying = [value for out_address, value in tx.outputs if out_address == address]
    if paying != [total]:
        problems.append(f"{txid}: outputs to the payout address are {paying}, the row's total is {total}")
    return problems
