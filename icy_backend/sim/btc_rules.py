"""The simulated node's own transaction code: parsing, weight, BIP-143 sighash and P2WPKH signature checks.

Written independently of the service's signer (embit): the parser and sighash are this module's, signatures are
verified with libsecp256k1 through ``coincurve``. A bug shared by the signer and the verifier cannot hide here.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from coincurve import PublicKey

SIGHASH_ALL, SIGHASH_NONE, SIGHASH_SINGLE, SIGHASH_ANYONECANPAY = 1, 2, 3, 0x80
SEQUENCE_FINAL = 0xFFFFFFFF
RBF_MAX_SEQUENCE = 0xFFFFFFFD  # BIP 125: an input with nSequence <= this signals replaceability
MAX_MONEY = 21_000_000 * 100_000_000
MAX_STANDARD_WEIGHT = 400_000


class TxDecodeError(ValueError):
    """The bytes are not one well-formed transaction."""


@dataclass(frozen=True)
class TxIn:
    prev_txid: str  # display (big-endian) hex, as Esplora shows it
    vout: int
    script_sig: bytes
    sequence: int
    witness: tuple[bytes, ...]


@dataclass(frozen=True)
class TxOut:
    value: int
    script: bytes


@dataclass(frozen=True)
class ParsedTx:
    version: int
    vin: tuple[TxIn, ...]
    vout: tuple[TxOut, ...]
    locktime: int
    raw: bytes
    base_size: int  # serialization without witness

    @property
    def segwit(self) -> bool:
        return any(i.witness for i in self.vin)

    @property
    def txid(self) -> str:
        return _dsha(self.serialize(with_witness=False))[::-1].hex()

    @property
    def weight(self) -> int:
        return self.base_size * 3 + len(self.raw)

    @property
    def vsize(self) -> int:
        """BIP 141 virtual size: weight / 4 rounded up."""
        return (self.weight + 3) // 4

    @property
    def signals_rbf(self) -> bool:
        return any(i.sequence <= RBF_MAX_SEQUENCE for i in self.vin)

    def serialize(self, *, with_witness: bool = True) -> bytes:
        witness = with_witness and self.segwit
        out = [struct.pack("<i", self.version)]
        if witness:
            out.append(b"\x00\x01")
        out.append(_varint(len(self.vin)))
        for i in self.vin:
            out += [bytes.fromhex(i.prev_txid)[::-1], struct.pack("<I", i.vout), _varbytes(i.script_sig)]
            out.append(struct.pack("<I", i.sequence))
        out.append(_varint(len(self.vout)))
        for o in self.vout:
            out += [struct.pack("<q", o.value), _varbytes(o.script)]
        if witness:
            for i in self.vin:
                out.append(_varint(len(i.witness)))
                out += [_varbytes(item) for item in i.witness]
        out.append(struct.pack("<I", self.locktime))
        return b"".join(out)


def parse_tx(raw: bytes) -> ParsedTx:
    """Parse one serialized transaction (BIP 144 witness serialization allowed); raises TxDecodeError."""
    r = _Reader(raw)
    try:
        version = r.int32()
        segwit = False
        if r.peek(2) == b"\x00\x01":
            r.take(2)
            segwit = True
        n_in = r.varint()
        ins = []
        for _ in range(n_in):
            prev = r.take(32)[::-1].hex()
            ins.append((prev, r.uint32(), r.take(r.varint()), r.uint32()))
        n_out = r.varint()
        outs = tuple(TxOut(r.int64(), r.take(r.varint())) for _ in range(n_out))
        witnesses: list[tuple[bytes, ...]] = [()] * n_in
        if segwit:
            witnesses = [tuple(r.take(r.varint()) for _ in range(r.varint())) for _ in range(n_in)]
            if not any(witnesses):
                raise TxDecodeError("superfluous witness record")
        locktime = r.uint32()
        if r.pos != len(raw):
            raise TxDecodeError("trailing bytes")
    except (IndexError, struct.error) as exc:
        raise TxDecodeError("truncated") from exc
    vin = tuple(TxIn(p, v, s, q, w) for (p, v, s, q), w in zip(ins, witnesses, strict=True))
    tx = ParsedTx(version, vin, outs, locktime, raw, 0)
    base = len(tx.serialize(with_witness=False))
    return ParsedTx(version, vin, outs, locktime, raw, base)


def bip143_sighash(tx: ParsedTx, index: int, script_code: bytes, value: int, hashtype: int) -> bytes:
    """The BIP-143 signature hash of input ``index`` spending ``value`` sats with ``script_code``."""
    base = hashtype & 0x1F
    anyone = bool(hashtype & SIGHASH_ANYONECANPAY)
    zero = b"\x00" * 32
    prevouts = b"".join(bytes.fromhex(i.prev_txid)[::-1] + struct.pack("<I", i.vout) for i in tx.vin)
    sequences = b"".join(struct.pack("<I", i.sequence) for i in tx.vin)
    hash_prevouts = zero if anyone else _dsha(prevouts)
    hash_sequence = zero if anyone or base in (SIGHASH_NONE, SIGHASH_SINGLE) else _dsha(sequences)
    if base not in (SIGHASH_NONE, SIGHASH_SINGLE):
        hash_outputs = _dsha(b"".join(struct.pack("<q", o.value) + _varbytes(o.script) for o in tx.vout))
    elif base == SIGHASH_SINGLE and index < len(tx.vout):
        o = tx.vout[index]
        hash_outputs = _dsha(struct.pack("<q", o.value) + _varbytes(o.script))
    else:
        hash_outputs = zero
    inp = tx.vin[index]
    preimage = b"".join(
        [
            struct.pack("<i", tx.version),
            hash_prevouts,
            hash_sequence,
            bytes.fromhex(inp.prev_txid)[::-1] + struct.pack("<I", inp.vout),
            _varbytes(script_code),
            struct.pack("<q", value),
            struct.pack("<I", inp.sequence),
            hash_outputs,
            struct.pack("<I", tx.locktime),
            struct.pack("<I", hashtype),
        ]
    )
    return _dsha(preimage)


def is_p2wpkh(script: bytes) -> bool:
    return len(script) == 22 and script[:2] == b"\x00\x14"


def check_p2wpkh_input(tx: ParsedTx, index: int, prev_script: bytes, prev_value: int) -> str | None:
    """None when input ``index`` validly spends the P2WPKH output, else Bitcoin Core's script error text."""
    inp = tx.vin[index]
    if inp.script_sig:
        return "Witness requires empty scriptSig"
    if not inp.witness:
        return "Witness program was passed an empty witness"
    if len(inp.witness) != 2:
        return "Witness program hash mismatch"
    sig, pub = inp.witness
    if hashlib.new("ripemd160", hashlib.sha256(pub).digest()).digest() != prev_script[2:]:
        return "Witness program hash mismatch"
    if len(pub) != 33 or pub[0] not in (2, 3):
        return "Using non-compressed keys in segwit"
    if not sig:
        return "Signature must be zero for failed CHECK(MULTI)SIG"
    hashtype = sig[-1]
    if hashtype & ~SIGHASH_ANYONECANPAY not in (SIGHASH_ALL, SIGHASH_NONE, SIGHASH_SINGLE):
        return "Signature hash type missing or not understood"
    script_code = b"\x76\xa9\x14" + prev_script[2:] + b"\x88\xac"
    digest = bip143_sighash(tx, index, script_code, prev_value, hashtype)
    try:
        ok = PublicKey(pub).verify(sig[:-1], digest, hasher=None)
    except (ValueError, TypeError):
        ok = False
    return None if ok else "Signature must be zero for failed CHECK(MULTI)SIG"


def _dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def _varbytes(data: bytes) -> bytes:
    return _varint(len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TxDecodeError("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n]

    def varint(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        value = int.from_bytes(self.take(size), "little")
        if value > len(self.data):  # no count in a transaction can exceed its byte length
            raise TxDecodeError("oversized count")
        return value

    def int32(self) -> int:
        return int(struct.unpack("<i", self.take(4))[0])

    def uint32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack("<q", self.take(8))[0])
