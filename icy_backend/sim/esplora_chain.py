"""State of the Esplora simulator: a small Bitcoin node with rules (SPEC §11).

Blocks, a mempool with a minimum fee rate, BIP 125 replacement, P2WPKH signature checks (``btc_rules``, not the
service's signer), fee-market mining, evictions, reorganisations and foreign spends. Every transaction ever seen
is kept with its state, so ``payments()`` can say what became of each output the service broadcast.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from embit import ec
from embit.networks import NETWORKS
from embit.script import Script, address_to_scriptpubkey, p2wpkh

from icy_backend.sim.btc_rules import ParsedTx, TxDecodeError, TxIn, TxOut, parse_tx
from icy_backend.sim.esplora_policy import MempoolPolicy
from icy_backend.sim.esplora_types import (
    CONFIRMED,
    CONFLICTED,
    DEFAULT_FEES,
    EVICTED,
    FAUCET_FEE,
    FOREIGN_FEE,
    LIVE,
    MEMPOOL,
    MIN_RELAY_FEE_RATE,
    NETWORK_NAMES,
    PAGE_CONFIRMED,
    PAGE_MEMPOOL,
    RECORD_ENV,
    REPLACED,
    RPC_DESERIALIZATION_ERROR,
    RPC_TRANSACTION_ALREADY_IN_CHAIN,
    RPC_TRANSACTION_ERROR,
    SCRIPT_TYPES,
    Block,
    BroadcastRejected,
    ControlError,
    Input,
    Output,
    StoredTx,
    rejected,
)

# Re-exported: tests, the HTTP layer and the demo import the node's vocabulary from here.
__all__ = [
    "CONFIRMED",
    "CONFLICTED",
    "EVICTED",
    "LIVE",
    "MEMPOOL",
    "PAGE_CONFIRMED",
    "PAGE_MEMPOOL",
    "RECORD_ENV",
    "REPLACED",
    "BroadcastRejected",
    "ControlError",
    "EsploraChain",
    "Output",
    "StoredTx",
]


class EsploraChain(MempoolPolicy):
    """In-memory Bitcoin node state with Esplora's JSON shapes."""

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
        self.mempool_min: float = MIN_RELAY_FEE_RATE
        self.txs: dict[str, StoredTx] = {}
        self.mempool: list[str] = []  # parents before children
        self.outspends: dict[tuple[str, int], tuple[str, int]] = {}  # live spends only
        self.address_txs: dict[str, dict[str, None]] = {}  # ordered set of txids per address
        self.wallet_addresses: set[str] = set()
        self.accepted: list[str] = []  # txids accepted by POST /tx, first acceptance order, each once
        self._accepted_ids: set[str] = set()
        self._order = 0
        self._nonce = 0
        self._blocks_made = 0
        self.blocks: list[Block] = []
        self._append_block([], height=start_height)
        self._sink = _key_address(b"esplora-sim sink", self.network)

    # ------------------------------------------------------------------ test-facing API

    @property
    def height(self) -> int:
        return self.blocks[-1].height

    def fund(self, address: str, sats: int, confirmed: bool = True, *, wallet: bool = True) -> tuple[str, int]:
        """Pay ``sats`` to ``address`` from a synthetic faucet output; confirmed funding is mined at once.

        A funded address counts as a wallet address (its outputs are not payments) unless ``wallet=False``.
        """
        if wallet:
            self.wallet_addresses.add(address)
        script = bytes(address_to_scriptpubkey(address).data)
        self._nonce += 1
        prev = hashlib.sha256(b"faucet:%d" % self._nonce).digest()[::-1].hex()
        witness = (b"\x00" * 72, b"\x02" * 33)
        tx = ParsedTx(2, (TxIn(prev, 0, b"", 0xFFFFFFFF, witness),), (TxOut(sats, script),), 0, b"", 0)
        faucet = Output(bytes(address_to_scriptpubkey(self._sink).data), sats + FAUCET_FEE, self._sink, "v0_p2wpkh")
        stored = self._store(parse_tx(tx.serialize()), [faucet], priority=True)
        if confirmed:
            self._append_block([stored.txid])
        else:
            self._enter_mempool(stored)
        return stored.txid, 0

    def mine(self, blocks: int = 1, min_fee_rate: float = 0.0) -> int:
        """Mine ``blocks`` blocks of the mempool transactions paying at least ``min_fee_rate`` sat/vB.

        A transaction whose unconfirmed parent stays behind stays behind too. Returns the new tip height.
        """
        for _ in range(blocks):
            included: list[str] = []
            chosen: set[str] = set()
            for txid in self.mempool:
                tx = self.txs[txid]
                parents_ok = all(self._parent_confirmed(i.txid) or i.txid in chosen for i in tx.vin)
                if parents_ok and (tx.priority or tx.pays_at_least(min_fee_rate)):
                    included.append(txid)
                    chosen.add(txid)
            self.mempool = [t for t in self.mempool if t not in chosen]
            self._append_block(included)
        return self.height

    def broadcast(self, raw_hex: str) -> str:
        """Validate and accept a raw transaction, as ``POST /tx`` does; raises BroadcastRejected."""
        try:
            parsed = parse_tx(bytes.fromhex(raw_hex.strip()))
        except (ValueError, TxDecodeError) as exc:
            raise rejected("TX decode failed", RPC_DESERIALIZATION_ERROR) from exc
        known = self.txs.get(parsed.txid)
        if known is not None and known.state == MEMPOOL:
            raise rejected("txn-already-known")
        if known is not None and known.state == CONFIRMED:
            if any(self._spender_state(known.txid, n) != CONFIRMED for n in range(len(known.vout))):
                raise rejected("Transaction already in block chain", RPC_TRANSACTION_ALREADY_IN_CHAIN)
            raise rejected("bad-txns-inputs-missingorspent", RPC_TRANSACTION_ERROR)
        prevouts, conflicts = self._check(parsed)
        replaced = self._check_replacement(parsed, prevouts, conflicts)
        self._check_scripts(parsed, prevouts)
        for txid in replaced:
            self._remove(txid, REPLACED)
        stored = self._store(parsed, prevouts, broadcast=True)
        self._enter_mempool(stored)
        if stored.txid not in self._accepted_ids:
            self._accepted_ids.add(stored.txid)
            self.accepted.append(stored.txid)
        record_path = os.environ.get(RECORD_ENV)
        if record_path:
            line = json.dumps({"raw": parsed.raw.hex(), "prevouts": [[p.value, p.script.hex()] for p in prevouts]})
            with open(record_path, "a", encoding="utf-8") as record:
                record.write(line + "\n")
        return stored.txid

    def payments(self) -> list[dict[str, Any]]:
        """Every output to a non-wallet address of every tx ever accepted by ``POST /tx``, with its status."""
        out: list[dict[str, Any]] = []
        for txid in self.accepted:
            tx = self.txs[txid]
            for o in tx.vout:
                if o.address in self.wallet_addresses:
                    continue
                entry: dict[str, Any] = {"txid": txid, "address": o.address, "value": o.value, "status": tx.state}
                if tx.state == CONFIRMED:
                    entry["confirmations"] = self.confirmations(txid)
                out.append(entry)
        return out

    def confirmations(self, txid: str) -> int:
        tx = self.txs.get(txid)
        if tx is None or tx.block_height is None or tx.state != CONFIRMED:
            return 0
        return self.height - tx.block_height + 1

    def set_fee_estimates(self, estimates: dict[str, float]) -> None:
        self.fee_estimates = {str(k): float(v) for k, v in estimates.items()}

    def set_fees(self, estimates: dict[str, float] | None = None, mempool_min: float | None = None) -> list[str]:
        """Set the ``/fee-estimates`` answer and/or the mempool minimum fee rate; returns the evicted txids."""
        if estimates is not None:
            self.set_fee_estimates(estimates)
        evicted: list[str] = []
        if mempool_min is not None:
            self.mempool_min = float(mempool_min)
            for txid in list(self.mempool):
                tx = self.txs[txid]
                if tx.state == MEMPOOL and not tx.priority and not tx.pays_at_least(self.mempool_min):
                    evicted += self._remove(txid, EVICTED)
        return evicted

    def evict(self, txid: str) -> list[str]:
        """Drop a mempool transaction and its descendants (a restart or expiry); returns the evicted txids."""
        tx = self.txs.get(txid)
        if tx is None or tx.state != MEMPOOL:
            raise ControlError("transaction is not in the mempool")
        return self._remove(txid, EVICTED)

    def reorg(self, depth: int, *, drop: bool = False) -> dict[str, list[str]]:
        """Disconnect the last ``depth`` blocks; their txs go back to the mempool (``drop``: are evicted)."""
        if depth < 1 or depth >= len(self.blocks):
            raise ControlError(f"depth must be between 1 and {len(self.blocks) - 1}")
        gone = self.blocks[-depth:]
        del self.blocks[-depth:]
        txids = [t for b in gone for t in b.txids]
        for txid in txids:
            self.txs[txid].block_height = None
            self.txs[txid].state = MEMPOOL
        self.mempool = txids + self.mempool
        dropped: list[str] = []
        if drop:
            for txid in txids:
                if self.txs[txid].state == MEMPOOL:
                    dropped += self._remove(txid, EVICTED)
        return {"disconnected": [b.hash for b in gone], "returned": [] if drop else txids, "dropped": dropped}

    def spend(self, txid: str, vout: int, *, confirm: bool = True) -> tuple[str, list[str]]:
        """Spend output ``txid:vout`` with a transaction the service did not make (a foreign spend).

        Mempool transactions spending it (and their descendants) become ``conflicted``. With ``confirm`` the
        foreign spend is mined at once in a block of its own. Returns (foreign txid, conflicted txids).
        """
        return self._foreign_spend([(txid, vout)], confirm=confirm)

    def tx_known(self, txid: str) -> bool:
        tx = self.txs.get(txid)
        return tx is not None and tx.state in LIVE

    def spend_inputs_elsewhere(self, tx_ref: str) -> str:
        """Double-spend: confirm a foreign tx spending every input of ``tx_ref`` (a txid or raw hex)."""
        if tx_ref in self.txs:
            inputs = [(i.txid, i.vout) for i in self.txs[tx_ref].vin]
        else:
            inputs = [(i.prev_txid, i.vout) for i in parse_tx(bytes.fromhex(tx_ref)).vin]
        try:
            return self._foreign_spend(inputs, confirm=True)[0]
        except ControlError as exc:
            raise ValueError(str(exc)) from exc

    def state(self) -> dict[str, Any]:
        """The node's state as the controls answer it."""
        return {
            "height": self.height,
            "tip_hash": self.blocks[-1].hash,
            "mempool": list(self.mempool),
            "mempool_min": self.mempool_min,
            "estimates": dict(self.fee_estimates),
        }

    # ------------------------------------------------------------------ internals

    def _spender_state(self, txid: str, vout: int) -> str | None:
        spender = self.outspends.get((txid, vout))
        return None if spender is None else self.txs[spender[0]].state

    def _foreign_spend(self, inputs: list[tuple[str, int]], *, confirm: bool) -> tuple[str, list[str]]:
        prevouts: list[Output] = []
        for prev_txid, vout in inputs:
            prev = self.txs.get(prev_txid)
            if prev is None or prev.state not in LIVE or not 0 <= vout < len(prev.vout):
                raise ControlError("unknown outpoint")
            if self._spender_state(prev_txid, vout) == CONFIRMED:
                raise ControlError("outpoint already spent by a confirmed transaction")
            prevouts.append(prev.vout[vout])
        conflicted: list[str] = []
        for key in inputs:
            spender = self.outspends.get(key)
            if spender is not None:
                conflicted += self._remove(spender[0], CONFLICTED)
        total = sum(p.value for p in prevouts)
        self._nonce += 1
        sink = bytes(address_to_scriptpubkey(self._sink).data)
        nonce_in = tuple(TxIn(t, v, b"", 0xFFFFFFFD, (self._nonce.to_bytes(8, "big"),)) for t, v in inputs)
        parsed = parse_tx(ParsedTx(2, nonce_in, (TxOut(max(total - FOREIGN_FEE, 0), sink),), 0, b"", 0).serialize())
        stored = self._store(parsed, prevouts, priority=True)
        if confirm:
            ancestors = self._mempool_ancestors([t for t, _ in inputs])
            self.mempool = [t for t in self.mempool if t not in ancestors]
            self._append_block([t for t in self.txs if t in ancestors] + [stored.txid])
        else:
            self._enter_mempool(stored)
        return stored.txid, conflicted

    def _mempool_ancestors(self, txids: list[str]) -> set[str]:
        """The given txids that are unconfirmed, with their unconfirmed ancestors (mined together with a child)."""
        found: set[str] = set()
        todo = list(txids)
        while todo:
            txid = todo.pop()
            if txid in found or self._parent_confirmed(txid):
                continue
            found.add(txid)
            todo += [i.txid for i in self.txs[txid].vin]
        return found

    def _append_block(self, txids: list[str], height: int | None = None) -> Block:
        if height is None:
            height = self.blocks[-1].height + 1
        prev_time = self.blocks[-1].time if self.blocks else 0
        block_time = max(int(self.clock()), prev_time + 1)
        prev_hash = self.blocks[-1].hash if self.blocks else "00" * 32
        # Unique per block ever mined: a height re-mined after a reorg, even within the same second, differs.
        self._blocks_made += 1
        digest = hashlib.sha256(f"{prev_hash}:{height}:{block_time}:{self._blocks_made}:{txids}".encode()).digest()
        block = Block(height, hashlib.sha256(digest).digest()[::-1].hex(), block_time, txids)
        self.blocks.append(block)
        for txid in txids:
            tx = self.txs[txid]
            tx.block_height = height
            tx.state = CONFIRMED
            for n, i in enumerate(tx.vin):
                self.outspends[(i.txid, i.vout)] = (txid, n)
        return block

    def _block(self, height: int) -> Block:
        return self.blocks[height - self.blocks[0].height]

    def _enter_mempool(self, tx: StoredTx) -> None:
        tx.state = MEMPOOL
        tx.block_height = None
        self.mempool.append(tx.txid)
        for n, i in enumerate(tx.vin):
            self.outspends[(i.txid, i.vout)] = (tx.txid, n)
        for address in tx.addresses:
            self.address_txs.setdefault(address, {})[tx.txid] = None

    def _remove(self, txid: str, state: str) -> list[str]:
        """Take an unconfirmed tx and its descendants out of the mempool with ``state``; returns their txids."""
        tx = self.txs[txid]
        if tx.state != MEMPOOL:
            return []
        removed = [txid]
        tx.state = state
        if txid in self.mempool:
            self.mempool.remove(txid)
        for i in tx.vin:
            if self.outspends.get((i.txid, i.vout), ("", 0))[0] == txid:
                del self.outspends[(i.txid, i.vout)]
        for n in range(len(tx.vout)):
            child = self.outspends.get((txid, n))
            if child is not None:
                removed += self._remove(child[0], state)
        return removed

    def _output(self, script: bytes, value: int) -> Output:
        parsed = Script(script)
        kind = parsed.script_type()
        address = parsed.address(self.network) if kind else None
        return Output(script, value, address, SCRIPT_TYPES.get(kind or "", "unknown"))

    def _store(
        self, tx: ParsedTx, prevouts: list[Output], *, broadcast: bool = False, priority: bool = False
    ) -> StoredTx:
        """Record ``tx`` (new, or known and coming back after an eviction); the caller places it."""
        existing = self.txs.get(tx.txid)
        if existing is not None:
            existing.broadcast = existing.broadcast or broadcast
            existing.order = self._next_order()
            return existing
        vin = [
            Input(i.prev_txid, i.vout, i.sequence, [w.hex() for w in i.witness], i.script_sig.hex(), prev)
            for i, prev in zip(tx.vin, prevouts, strict=True)
        ]
        vout = [self._output(o.script, o.value) for o in tx.vout]
        stored = StoredTx(
            tx.txid, tx.raw, tx.version, tx.locktime, vin, vout, len(tx.raw), tx.weight, self._next_order()
        )
        stored.broadcast, stored.priority = broadcast, priority
        stored.addresses = {o.address for o in vout if o.address} | {
            i.prevout.address for i in vin if i.prevout.address
        }
        self.txs[tx.txid] = stored
        for address in stored.addresses:
            self.address_txs.setdefault(address, {})[tx.txid] = None
        return stored

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def live(self, txids: Iterable[str]) -> list[StoredTx]:
        return [self.txs[t] for t in txids if self.txs[t].state in LIVE]


def _key_address(seed: bytes, network: Any) -> str:
    key = ec.PrivateKey(hashlib.sha256(seed).digest())
    return str(p2wpkh(key.get_public_key()).address(network))
