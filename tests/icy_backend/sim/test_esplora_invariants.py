"""The Esplora simulator stays one consistent node under random payments, replacements, evictions, fee spikes,
fee-market mining, reorgs and foreign spends (hypothesis state machine); its reads agree with its state."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.esplora_chain import CONFIRMED, LIVE, MEMPOOL, BroadcastRejected

WALLET = P2wpkhKey.from_seed(b"invariants wallet")
USER = P2wpkhKey.from_seed(b"invariants user")
CORE_CODES = {-25, -26, -27}


class NodeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sim = EsploraSim(clock=lambda: 1_700_000_000.0)  # frozen clock: hashes must still be unique
        self.hashes: set[str] = {self.sim.blocks[-1].hash}
        self.raws: dict[str, str] = {}
        self.refusals: Counter[str] = Counter()

    def wallet_coins(self, *, include_spent_in_mempool: bool) -> list[tuple[str, int, int]]:
        coins = []
        for tx in self.sim.txs.values():
            if tx.state not in LIVE:
                continue
            for n, o in enumerate(tx.vout):
                spender = self.sim.outspends.get((tx.txid, n))
                free = spender is None or (include_spent_in_mempool and self.sim.txs[spender[0]].state == MEMPOOL)
                if o.address == WALLET.address and free:
                    coins.append((tx.txid, n, o.value))
        return sorted(coins)

    def submit(self, raw: str) -> None:
        try:
            txid = self.sim.broadcast(raw)
        except BroadcastRejected as exc:
            refused = exc
        else:
            self.raws[txid] = raw
            return
        self.refusals[refused.message.split(",")[0]] += 1
        assert refused.code in CORE_CODES, refused.message
        assert not refused.message.startswith("mandatory-script-verify-flag-failed"), refused.message

    @initialize(values=st.lists(st.integers(10_000, 200_000), min_size=1, max_size=4))
    def start_funded(self, values: list[int]) -> None:
        for value in values:
            self.sim.fund(WALLET.address, value)

    @rule(value=st.integers(10_000, 200_000), confirmed=st.booleans())
    def fund(self, value: int, confirmed: bool) -> None:
        self.sim.fund(WALLET.address, value, confirmed)

    @rule(data=st.data(), fee=st.integers(100, 6_000), rbf=st.booleans(), conflict=st.booleans())
    def pay(self, data: st.DataObject, fee: int, rbf: bool, conflict: bool) -> None:
        coins = self.wallet_coins(include_spent_in_mempool=conflict)
        if not coins:
            return
        picked = data.draw(st.lists(st.sampled_from(coins), min_size=1, max_size=2, unique=True))
        total = sum(v for _, _, v in picked)
        amount = total // 2
        change = total - amount - fee
        outputs = [(USER.address, amount)] + ([(WALLET.address, change)] if change >= 294 else [])
        sequence = 0xFFFFFFFD if rbf else 0xFFFFFFFF
        self.submit(WALLET.sign_spend(picked, outputs, sequence=sequence))

    @rule(data=st.data(), extra=st.integers(-50, 3_000))
    def bump(self, data: st.DataObject, extra: int) -> None:
        """Replace a mempool payment: same inputs, the same payment, a fee near the BIP 125 minimum."""
        mine = [t for t in self.sim.mempool if t in self.raws]
        if not mine:
            return
        old = self.sim.txs[data.draw(st.sampled_from(mine))]
        coins = [(i.txid, i.vout, i.prevout.value) for i in old.vin]
        fee = old.fee + old.vsize + extra
        change = sum(v for _, _, v in coins) - old.vout[0].value - fee
        outputs = [(USER.address, old.vout[0].value)] + ([(WALLET.address, change)] if change >= 294 else [])
        self.submit(WALLET.sign_spend(coins, outputs, sequence=0xFFFFFFFD))

    def fees_fall(self) -> None:
        self.sim.set_fees(mempool_min=1.0)

    @rule(data=st.data())
    def rebroadcast(self, data: st.DataObject) -> None:
        if self.raws:
            self.submit(self.raws[data.draw(st.sampled_from(sorted(self.raws)))])

    def evict(self, data: st.DataObject) -> None:
        if self.sim.mempool:
            self.sim.evict(data.draw(st.sampled_from(self.sim.mempool)))

    def fee_spike(self, rate: float) -> None:
        evicted = self.sim.set_fees(mempool_min=rate)
        assert all(not self.sim.txs[t].pays_at_least(rate) or self.sim.txs[t].state != MEMPOOL for t in evicted)

    def mine(self, blocks: int, rate: float) -> None:
        before = len(self.sim.blocks)
        self.sim.mine(blocks, rate)
        for block in self.sim.blocks[before:]:
            assert block.hash not in self.hashes
            self.hashes.add(block.hash)
            for txid in block.txids:
                tx = self.sim.txs[txid]
                assert tx.priority or tx.pays_at_least(rate)

    def reorg(self, depth: int, drop: bool) -> None:
        if depth < len(self.sim.blocks):
            self.sim.reorg(depth, drop=drop)

    def foreign_spend(self, data: st.DataObject, confirm: bool) -> None:
        coins = self.wallet_coins(include_spent_in_mempool=True)
        if coins:
            txid, vout, _ = data.draw(st.sampled_from(coins))
            self.sim.spend(txid, vout, confirm=confirm)
            if confirm:
                self.hashes.add(self.sim.blocks[-1].hash)

    @rule(data=st.data(), kind=st.sampled_from(["evict", "spike", "fall", "mine", "reorg", "foreign"]))
    def chain_event(self, data: st.DataObject, kind: str) -> None:
        """One thing the network does (one rule, so that payments stay most of the steps)."""
        if kind == "evict":
            self.evict(data)
        elif kind == "spike":
            self.fee_spike(data.draw(st.floats(1.0, 25.0)))
        elif kind == "fall":
            self.fees_fall()
        elif kind == "mine":
            self.mine(data.draw(st.integers(1, 3)), data.draw(st.sampled_from([0.0, 2.0, 10.0, 30.0])))
        elif kind == "reorg":
            self.reorg(data.draw(st.integers(1, 3)), drop=data.draw(st.booleans()))
        else:
            self.foreign_spend(data, confirm=data.draw(st.booleans()))

    @invariant()
    def one_consistent_node(self) -> None:
        sim = self.sim
        live = {t: tx for t, tx in sim.txs.items() if tx.state in LIVE}
        spends = Counter((i.txid, i.vout) for tx in live.values() for i in tx.vin)
        assert max(spends.values(), default=1) == 1, "two live transactions spend one output"
        assert {k: v[0] for k, v in sim.outspends.items()} == {
            (i.txid, i.vout): tx.txid for tx in live.values() for i in tx.vin
        }
        assert len(sim.mempool) == len(set(sim.mempool))
        assert set(sim.mempool) == {t for t, tx in live.items() if tx.state == MEMPOOL}
        position = {t: n for n, t in enumerate(sim.mempool)}
        heights = [b.height for b in sim.blocks]
        assert heights == list(range(heights[0], heights[0] + len(heights)))
        in_blocks = [t for b in sim.blocks for t in b.txids]
        assert sorted(in_blocks) == sorted(t for t, tx in live.items() if tx.state == CONFIRMED)
        for tx in live.values():
            for i in tx.vin:
                parent = sim.txs.get(i.txid)
                if parent is None:  # faucet input
                    continue
                assert parent.state in LIVE
                if tx.state == CONFIRMED:
                    assert parent.state == CONFIRMED
                    assert parent.block_height is not None and tx.block_height is not None
                    assert parent.block_height <= tx.block_height
                elif parent.state == MEMPOOL:
                    assert position[parent.txid] < position[tx.txid]
        # Reads agree with the state: history once each, balances, UTXOs, payments.
        mempool, confirmed = sim.history(WALLET.address)
        ids = [t.txid for t in mempool + confirmed]
        assert len(ids) == len(set(ids))
        assert set(ids) == {t for t, tx in live.items() if WALLET.address in tx.addresses}
        stats = sim.address_json(WALLET.address)["chain_stats"]
        confirmed_unspent = sum(
            o.value
            for tx in live.values()
            if tx.state == CONFIRMED
            for n, o in enumerate(tx.vout)
            if o.address == WALLET.address
            and ((tx.txid, n) not in sim.outspends or sim.txs[sim.outspends[(tx.txid, n)][0]].state != CONFIRMED)
        )
        assert stats["funded_txo_sum"] - stats["spent_txo_sum"] == confirmed_unspent
        utxos = {(u["txid"], u["vout"]) for u in sim.utxos_json(WALLET.address)}
        assert utxos == {(t, n) for t, n, _ in self.wallet_coins(include_spent_in_mempool=False)}
        for p in sim.payments():
            tx = sim.txs[p["txid"]]
            assert p["status"] == tx.state
            if tx.state == CONFIRMED:
                assert tx.block_height is not None
                assert p["confirmations"] == sim.height - tx.block_height + 1


TestNode = NodeMachine.TestCase
TestNode.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
