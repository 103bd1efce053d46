"""State of the Esplora simulator: UTXO set, mempool, blocks, address index, broadcast validation."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embit import ec
from embit.networks import NETWORKS
from embit.script import Script, Witness, address_to_scriptpubkey, p2pkh_from_p2wpkh
from embit.transaction import Transaction, TransactionInput, TransactionOutput

PAGE_CONFIRMED = 25
PAGE_MEMPOOL = 50
SIG_FAILED = "mandatory-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG)"
NETWORK_NAMES = {"mainnet": "main", "main": "main", "testnet": "test", "test": "test"}
NETWORK_NAMES.update({"signet": "signet", "regtest": "regtest"})
SCRIPT_TYPES = {
    "p2wpkh": "v0_p2wpkh",
    "p2wsh": "v0_p2wsh",
    "p2tr": "v1_p2tr",
    "p2pkh": "p2pkh",
    "p2sh": "p2sh",
}
DUST = {"p2pkh": 546, "p2sh": 540, "p2wpkh": 294, "p2wsh": 330, "p2tr": 330}
DEFAULT_FEES: dict[str, float] = {"1": 20.1, "2": 15.3, "3": 10.5, "4": 8.2, "5": 6.7, "6": 5.2, "10": 3.4}
DEFAULT_FEES.update({"12": 3.0, "25": 2.1, "144": 1.2, "504": 1.0, "1008": 1.0})


class BroadcastRejected(Exception):
    """A raw transaction the simulated node refuses, with bitcoind's error code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> str:
        detail = json.dumps({"code": self.code, "message": self.message}, separators=(",", ":"))
        return f"sendrawtransaction RPC error: {detail}"


@dataclass
class Output:
    script: bytes
    value: int
    address: str | None
    type: str | None


@dataclass
class Input:
    txid: str
    vout: int
    sequence: int
    witness: list[str]
    scriptsig: str
    prevout: Output


@dataclass
class StoredTx:
    txid: str
    raw: bytes
    version: int
    locktime: int
    vin: list[Input]
    vout: list[Output]
    size: int
    weight: int
    order: int
    block_height: int | None = None
    evicted: bool = False
    addresses: set[str] = field(default_factory=set)

    @property
    def fee(self) -> int:
        return sum(i.prevout.value for i in self.vin) - sum(o.value for o in self.vout)


@dataclass
class Block:
    height: int
    hash: str
    time: int
    txids: list[str]


class EsploraChain:
    """In-memory Bitcoin chain state with Esplora's JSON shapes."""

    def __init__(
        self,
        network: str = "testnet",
        *,
        start_height: int = 100,
        verify_signatures: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.network_name = NETWORK_NAMES[network]
        self.network = NETWORKS[self.network_name]
        self.verify_signatures = verify_signatures
        self.clock = clock
        self.fee_estimates: dict[str, float] = dict(DEFAULT_FEES)
        self.txs: dict[str, StoredTx] = {}
        self.mempool: list[str] = []
        self.outspends: dict[tuple[str, int], tuple[str, int]] = {}
        self.address_txs: dict[str, list[str]] = {}
        self.accepted: list[str] = []
        self._order = 0
        self._nonce = 0
        self.blocks: list[Block] = []
        self._append_block([], height=start_height)
        self._sink = _key_address(b"esplora-sim sink", self.network)

    # ------------------------------------------------------------------ test-facing API

    @property
    def height(self) -> int:
        return self.blocks[-1].height

    def fund(self, address: str, sats: int, confirmed: bool = True) -> tuple[str, int]:
        """Pay ``sats`` to ``address`` from a synthetic faucet output; confirmed funding is mined at once."""
        script = address_to_scriptpubkey(address)
        self._nonce += 1
        prev = hashlib.sha256(b"faucet:%d" % self._nonce).digest()
        tx = Transaction(
            version=2,
            vin=[TransactionInput(prev, 0, script_sig=Script(b""), witness=Witness([b"\x00" * 72, b"\x02" * 33]))],
            vout=[TransactionOutput(sats, script)],
        )
        faucet = Output(bytes(address_to_scriptpubkey(self._sink).data), sats + 500, self._sink, "v0_p2wpkh")
        stored = self._store(tx, prevouts=[faucet])
        if confirmed:
            self._append_block([stored.txid])
        else:
            self.mempool.append(stored.txid)
        return stored.txid, 0

    def mine(self) -> int:
        """Confirm every mempool transaction into a new block; returns its height."""
        txids, self.mempool = self.mempool, []
        return self._append_block(txids).height

    def broadcast(self, raw_hex: str) -> str:
        """Validate and accept a raw transaction, as ``POST /tx`` does; raises BroadcastRejected."""
        try:
            tx = Transaction.parse(bytes.fromhex(raw_hex.strip()))
        except Exception as exc:
            raise BroadcastRejected(-22, "TX decode failed") from exc
        txid = str(tx.txid().hex())
        known = self.txs.get(txid)
        if known is not None and not known.evicted:
            if known.block_height is not None:
                raise BroadcastRejected(-27, "Transaction already in block chain")
            return txid  # already in the mempool: bitcoind answers with the txid again
        prevouts = self._check(tx)
        stored = self._store(tx, prevouts)
        self.mempool.append(txid)
        self.accepted.append(txid)
        return stored.txid

    def payments(self) -> list[dict[str, Any]]:
        """Every output of every tx accepted via ``POST /tx`` (evicted double-spent ones excluded)."""
        out: list[dict[str, Any]] = []
        for txid in self.accepted:
            tx = self.txs[txid]
            if tx.evicted:
                continue
            for o in tx.vout:
                out.append({"txid": txid, "address": o.address, "value": o.value})
        return out

    def set_fee_estimates(self, estimates: dict[str, float]) -> None:
        self.fee_estimates = {str(k): float(v) for k, v in estimates.items()}

    def tx_known(self, txid: str) -> bool:
        tx = self.txs.get(txid)
        return tx is not None and not tx.evicted

    def spend_inputs_elsewhere(self, tx_ref: str) -> str:
        """Double-spend: confirm a different tx spending every input of ``tx_ref`` (a txid or raw hex).

        A mempool transaction that spent those inputs is evicted. Returns the conflicting txid.
        """
        if tx_ref in self.txs:
            inputs = [(i.txid, i.vout) for i in self.txs[tx_ref].vin]
        else:
            parsed = Transaction.parse(bytes.fromhex(tx_ref))
            inputs = [(inp.txid.hex(), inp.vout) for inp in parsed.vin]
        prevouts: list[Output] = []
        for prev_txid, vout in inputs:
            spender = self.outspends.get((prev_txid, vout))
            if spender is not None:
                spent_by = self.txs[spender[0]]
                if spent_by.block_height is not None:
                    raise ValueError("input already spent by a confirmed transaction")
                self._evict(spent_by.txid)
            prevouts.append(self.txs[prev_txid].vout[vout])
        total = sum(p.value for p in prevouts)
        self._nonce += 1
        tx = Transaction(
            version=2,
            vin=[TransactionInput(bytes.fromhex(t), v, sequence=0xFFFFFFFD - self._nonce % 1000) for t, v in inputs],
            vout=[TransactionOutput(max(total - 1000, 0), address_to_scriptpubkey(self._sink))],
        )
        stored = self._store(tx, prevouts)
        self._append_block([stored.txid])
        return stored.txid

    # ------------------------------------------------------------------ internals

    def _append_block(self, txids: list[str], height: int | None = None) -> Block:
        if height is None:
            height = self.blocks[-1].height + 1
        prev_time = self.blocks[-1].time if self.blocks else 0
        block_time = max(int(self.clock()), prev_time + 1)
        prev_hash = self.blocks[-1].hash if self.blocks else "00" * 32
        digest = hashlib.sha256(f"{prev_hash}:{height}:{block_time}".encode()).digest()
        block = Block(height, hashlib.sha256(digest).digest()[::-1].hex(), block_time, txids)
        self.blocks.append(block)
        for txid in txids:
            self.txs[txid].block_height = height
        return block

    def _block(self, height: int) -> Block:
        return self.blocks[height - self.blocks[0].height]

    def _evict(self, txid: str) -> None:
        tx = self.txs[txid]
        tx.evicted = True
        if txid in self.mempool:
            self.mempool.remove(txid)
        for i in tx.vin:
            if self.outspends.get((i.txid, i.vout), ("", 0))[0] == txid:
                del self.outspends[(i.txid, i.vout)]
        for n in range(len(tx.vout)):  # descendants go too
            child = self.outspends.get((txid, n))
            if child is not None:
                self._evict(child[0])

    def _output(self, out: Any) -> Output:
        script = out.script_pubkey
        kind = script.script_type()
        address = script.address(self.network) if kind else None
        return Output(bytes(script.data), int(out.value), address, SCRIPT_TYPES.get(kind or "", "unknown"))

    def _check(self, tx: Any) -> list[Output]:
        if not tx.vin:
            raise BroadcastRejected(-26, "bad-txns-vin-empty")
        if not tx.vout:
            raise BroadcastRejected(-26, "bad-txns-vout-empty")
        prevouts: list[Output] = []
        seen: set[tuple[str, int]] = set()
        for inp in tx.vin:
            key = (inp.txid.hex(), int(inp.vout))
            if key in seen:
                raise BroadcastRejected(-26, "bad-txns-inputs-duplicate")
            seen.add(key)
            prev = self.txs.get(key[0])
            if prev is None or prev.evicted or key[1] >= len(prev.vout):
                raise BroadcastRejected(-25, "bad-txns-inputs-missingorspent")
            spender = self.outspends.get(key)
            if spender is not None:
                if self.txs[spender[0]].block_height is None:
                    raise BroadcastRejected(-26, "txn-mempool-conflict")
                raise BroadcastRejected(-25, "bad-txns-inputs-missingorspent")
            prevouts.append(prev.vout[key[1]])
        for out in tx.vout:
            kind = out.script_pubkey.script_type()
            if out.value < DUST.get(kind or "", 0) or out.value < 0:
                raise BroadcastRejected(-26, "dust")
        total_in = sum(p.value for p in prevouts)
        total_out = sum(int(o.value) for o in tx.vout)
        if total_out > total_in:
            raise BroadcastRejected(-26, "bad-txns-in-belowout")
        if self.verify_signatures:
            for n, prevout in enumerate(prevouts):
                if prevout.type == "v0_p2wpkh" and not _p2wpkh_ok(tx, n, prevout):
                    raise BroadcastRejected(
                        -26,
                        SIG_FAILED,
                    )
        vsize = (_weight(tx) + 3) // 4
        if total_in - total_out < vsize:
            raise BroadcastRejected(-26, f"min relay fee not met, {total_in - total_out} < {vsize}")
        return prevouts

    def _store(self, tx: Any, prevouts: list[Output]) -> StoredTx:
        raw = tx.serialize()
        txid = str(tx.txid().hex())
        self._order += 1
        vin = [
            Input(
                txid=inp.txid.hex(),
                vout=int(inp.vout),
                sequence=int(inp.sequence),
                witness=[bytes(w).hex() for w in inp.witness.items],
                scriptsig=bytes(inp.script_sig.data).hex(),
                prevout=prev,
            )
            for inp, prev in zip(tx.vin, prevouts, strict=True)
        ]
        vout = [self._output(o) for o in tx.vout]
        stored = StoredTx(txid, raw, int(tx.version), int(tx.locktime), vin, vout, len(raw), _weight(tx), self._order)
        stored.addresses = {o.address for o in vout if o.address} | {
            i.prevout.address for i in vin if i.prevout.address
        }
        self.txs[txid] = stored
        for n, i in enumerate(vin):
            if i.txid in self.txs:
                self.outspends[(i.txid, i.vout)] = (txid, n)
        for address in stored.addresses:
            self.address_txs.setdefault(address, []).append(txid)
        return stored


def _weight(tx: Any) -> int:
    total = len(tx.serialize())
    if not tx.is_segwit:
        return total * 4
    witness = 2 + sum(len(inp.witness.serialize()) for inp in tx.vin)
    return (total - witness) * 4 + witness


def _p2wpkh_ok(tx: Any, n: int, prevout: Output) -> bool:
    """BIP-143 check of a P2WPKH input: witness [sig+hashtype, pubkey] matching the prevout's key hash."""
    try:
        items = tx.vin[n].witness.items
        if len(items) != 2:
            return False
        sig_bytes, pub_bytes = bytes(items[0]), bytes(items[1])
        if hashlib.new("ripemd160", hashlib.sha256(pub_bytes).digest()).digest() != prevout.script[2:]:
            return False
        script_code = p2pkh_from_p2wpkh(Script(prevout.script))
        msg = tx.sighash_segwit(n, script_code, prevout.value, sighash=sig_bytes[-1])
        pub = ec.PublicKey.parse(pub_bytes)
        return bool(pub.verify(ec.Signature.parse(sig_bytes[:-1]), msg))
    except Exception:
        return False


def _key_address(seed: bytes, network: Any) -> str:
    from embit.script import p2wpkh

    key = ec.PrivateKey(hashlib.sha256(seed).digest())
    return str(p2wpkh(key.get_public_key()).address(network))
