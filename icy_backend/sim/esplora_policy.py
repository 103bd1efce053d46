"""Mempool acceptance policy of the Esplora simulator, in Bitcoin Core's order (SPEC §11).

Context checks (inputs, amounts, dust, fee floors), BIP 125 replacement (rules 2-6 and the signal, inherited
from unconfirmed ancestors) and script checks with the simulator's own BIP-143 code (``btc_rules``).
"""

from __future__ import annotations

from embit.script import Script

from icy_backend.sim.btc_rules import (
    MAX_MONEY,
    MAX_STANDARD_WEIGHT,
    SEQUENCE_FINAL,
    ParsedTx,
    check_p2wpkh_input,
    is_p2wpkh,
)
from icy_backend.sim.esplora_types import (
    CONFIRMED,
    DUST,
    LIVE,
    MAX_OP_RETURN,
    MAX_REPLACEMENTS,
    MEMPOOL,
    MIN_RELAY_FEE_RATE,
    RPC_TRANSACTION_ERROR,
    Block,
    Output,
    StoredTx,
    fee_at,
    rejected,
)

LOCKTIME_THRESHOLD = 500_000_000  # below: a block height, above: a unix time
SEQUENCE_LOCKTIME_DISABLE = 1 << 31
SEQUENCE_LOCKTIME_TYPE_TIME = 1 << 22
SEQUENCE_LOCKTIME_MASK = 0xFFFF


class MempoolPolicy:
    """Acceptance checks over the node state that ``EsploraChain`` keeps."""

    txs: dict[str, StoredTx]
    outspends: dict[tuple[str, int], tuple[str, int]]
    mempool_min: float
    verify_signatures: bool
    blocks: list[Block]

    def _check(self, tx: ParsedTx) -> tuple[list[Output], set[str]]:
        """Context checks in Bitcoin Core's order; returns the prevouts and the directly conflicting txids."""
        if not tx.vin:
            raise rejected("bad-txns-vin-empty")
        if not tx.vout:
            raise rejected("bad-txns-vout-empty")
        if tx.weight > MAX_STANDARD_WEIGHT:
            raise rejected("tx-size")
        if any(o.value < 0 for o in tx.vout):
            raise rejected("bad-txns-vout-negative")
        if any(o.value > MAX_MONEY for o in tx.vout) or sum(o.value for o in tx.vout) > MAX_MONEY:
            raise rejected("bad-txns-txouttotal-toolarge")
        if len({(i.prev_txid, i.vout) for i in tx.vin}) != len(tx.vin):
            raise rejected("bad-txns-inputs-duplicate")
        if tx.version not in (1, 2):
            raise rejected("version")
        if not self._final(tx):
            raise rejected("non-final")
        for o in tx.vout:
            if o.script[:1] == b"\x6a" and len(o.script) <= MAX_OP_RETURN:  # nulldata: standard, no dust limit
                continue
            kind = Script(o.script).script_type()
            if kind not in DUST:
                raise rejected("scriptpubkey")
            if o.value < DUST[kind]:
                raise rejected("dust")
        conflicts: set[str] = set()
        prevouts: list[Output] = []
        for i in tx.vin:
            prev = self.txs.get(i.prev_txid)
            if prev is None or prev.state not in LIVE or i.vout >= len(prev.vout):
                raise rejected("bad-txns-inputs-missingorspent", RPC_TRANSACTION_ERROR)
            spender = self.outspends.get((i.prev_txid, i.vout))
            if spender is not None:
                if self.txs[spender[0]].state == CONFIRMED:
                    raise rejected("bad-txns-inputs-missingorspent", RPC_TRANSACTION_ERROR)
                conflicts.add(spender[0])
            prevouts.append(prev.vout[i.vout])
        for txid in conflicts:
            if not self._replaceable(txid):
                raise rejected("txn-mempool-conflict")
        if not self._sequence_locks_ok(tx):
            raise rejected("non-BIP68-final")
        total_in = sum(p.value for p in prevouts)
        total_out = sum(o.value for o in tx.vout)
        if total_out > total_in:
            raise rejected(f"bad-txns-in-belowout, value in ({total_in}) < value out ({total_out})")
        fee, vsize = total_in - total_out, tx.vsize
        min_relay = fee_at(MIN_RELAY_FEE_RATE, vsize)
        if fee < min_relay:
            raise rejected(f"min relay fee not met, {fee} < {min_relay}")
        mempool_min = fee_at(self.mempool_min, vsize)
        if fee < mempool_min:
            raise rejected(f"mempool min fee not met, {fee} < {mempool_min}")
        return prevouts, conflicts

    def _median_time_past(self, height: int | None = None) -> int:
        """BIP 113: the median time of the 11 blocks up to ``height`` (default: the tip)."""
        first = self.blocks[0].height
        top = self.blocks[-1].height if height is None else max(min(height, self.blocks[-1].height), first)
        times = sorted(b.time for b in self.blocks[max(top - first - 10, 0) : top - first + 1])
        return times[len(times) // 2]

    def _final(self, tx: ParsedTx) -> bool:
        """Bitcoin Core's IsFinalTx for the next block: an absolute lock time already passed, or every input final."""
        if tx.locktime == 0:
            return True
        next_height = self.blocks[-1].height + 1
        cutoff = next_height if tx.locktime < LOCKTIME_THRESHOLD else self._median_time_past()
        return tx.locktime < cutoff or all(i.sequence == SEQUENCE_FINAL for i in tx.vin)

    def _sequence_locks_ok(self, tx: ParsedTx) -> bool:
        """BIP 68 relative lock times (version 2), for a transaction in the next block."""
        if tx.version < 2:
            return True
        next_height = self.blocks[-1].height + 1
        for i in tx.vin:
            if i.sequence & SEQUENCE_LOCKTIME_DISABLE:
                continue
            parent = self.txs.get(i.prev_txid)
            coin_height = next_height
            if parent is not None and parent.state == CONFIRMED and parent.block_height is not None:
                coin_height = parent.block_height
            lock = i.sequence & SEQUENCE_LOCKTIME_MASK
            if i.sequence & SEQUENCE_LOCKTIME_TYPE_TIME:
                min_time = self._median_time_past(coin_height - 1) + (lock << 9) - 1
                if min_time >= self._median_time_past():
                    return False
            elif coin_height + lock - 1 >= next_height:
                return False
        return True

    def _replaceable(self, txid: str) -> bool:
        """BIP 125: the tx or one of its unconfirmed ancestors signals replaceability."""
        tx = self.txs[txid]
        if tx.signals_rbf:
            return True
        return any(not self._parent_confirmed(i.txid) and self._replaceable(i.txid) for i in tx.vin)

    def _parent_confirmed(self, txid: str) -> bool:
        parent = self.txs.get(txid)  # faucet inputs spend outputs the node never saw: as good as confirmed
        return parent is None or parent.state == CONFIRMED

    def _check_replacement(self, tx: ParsedTx, prevouts: list[Output], conflicts: set[str]) -> list[str]:
        """BIP 125 rules 3, 4, 5 and 6; returns every txid the replacement evicts (conflicts and descendants)."""
        if not conflicts:
            return []
        replaced: list[str] = []
        for txid in sorted(conflicts, key=lambda t: self.txs[t].order):
            replaced += [t for t in self._descendants(txid) if t not in replaced]
        if len(replaced) > MAX_REPLACEMENTS:
            raise rejected(f"too many potential replacements, rejecting replacement {tx.txid}")
        if {i.prev_txid for i in tx.vin} & set(replaced):
            raise rejected(f"bad-txns-spends-conflicting-tx, {tx.txid} spends conflicting transaction")
        conflict_parents = {i.txid for c in conflicts for i in self.txs[c].vin}
        for n, i in enumerate(tx.vin):  # rule 2: no new unconfirmed inputs
            if not self._parent_confirmed(i.prev_txid) and i.prev_txid not in conflict_parents:
                raise rejected(f"replacement-adds-unconfirmed, replacement {tx.txid} adds unconfirmed input, idx {n}")
        fee = sum(p.value for p in prevouts) - sum(o.value for o in tx.vout)
        vsize = tx.vsize
        for txid in conflicts:
            old = self.txs[txid]
            if fee * old.vsize <= old.fee * vsize:  # new fee rate must be strictly higher (rule 6)
                raise rejected(
                    f"insufficient fee, rejecting replacement {tx.txid}; new feerate {fee / vsize:.8f} <= "
                    f"old feerate {old.fee_rate:.8f}"
                )
        replaced_fees = sum(self.txs[t].fee for t in replaced)
        if fee < replaced_fees:
            raise rejected(
                f"insufficient fee, rejecting replacement {tx.txid}, less fees than conflicting txs; "
                f"{fee} < {replaced_fees}"
            )
        extra = fee_at(MIN_RELAY_FEE_RATE, vsize)
        if fee - replaced_fees < extra:
            raise rejected(
                f"insufficient fee, rejecting replacement {tx.txid}, not enough additional fees to relay; "
                f"{fee - replaced_fees} < {extra}"
            )
        return replaced

    def _descendants(self, txid: str) -> list[str]:
        out = [txid]
        for n in range(len(self.txs[txid].vout)):
            child = self.outspends.get((txid, n))
            if child is not None and self.txs[child[0]].state == MEMPOOL:
                out += [t for t in self._descendants(child[0]) if t not in out]
        return out

    def _check_scripts(self, tx: ParsedTx, prevouts: list[Output]) -> None:
        if not self.verify_signatures:
            return
        for n, prevout in enumerate(prevouts):
            if not is_p2wpkh(prevout.script):
                # Only P2WPKH coins are ever spent through this node; anything else cannot be checked here.
                raise rejected("non-mandatory-script-verify-flag (simulator verifies P2WPKH inputs only)")
            error = check_p2wpkh_input(tx, n, prevout.script, prevout.value)
            if error is not None:
                raise rejected(f"mandatory-script-verify-flag-failed ({error})")
