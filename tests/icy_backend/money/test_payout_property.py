"""Money, proven (SPEC §12): a stateful hypothesis test of the payout processor on the node simulator.

Random sequences of swaps, processing runs that crash at every crash point, evictions, fee spikes and fee
markets, fee wars in which dropped transactions come back, foreign spends of wallet coins, reorgs (kept or
dropped), a primary Esplora down with failover to a lagging replica, and restarts. After every step: no payout is
paid twice on the chain, every payout that became ``completed`` had its confirmations at that moment, every
confirmed payment pays exactly its row's total; at the end of each sequence: treasury = start − Σ paid − Σ fees
(− the coins foreign transactions took). In-process simulator + SQLite so that 1000 sequences fit in minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import delete, event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from icy_backend.breakers import Breakers
from icy_backend.clients.esplora import EsploraClient
from icy_backend.clients.prices import PriceClient
from icy_backend.db.migrate import upgrade
from icy_backend.db.tables import btc_payout_candidates as C
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.domain.payouts import PayoutProcessor
from icy_backend.domain.wallet import wallet_from_wif
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.esplora_chain import BroadcastRejected, ControlError
from icy_backend.sim.faults import Fault
from icy_backend.sim.prices import PriceSim
from tests.icy_backend.money.conftest import WIF, make_settings, recipient

EXAMPLES = int(os.environ.get("ICY_PAYOUT_PROPERTY_EXAMPLES", "1000"))
CONFIRMATIONS = 2
CRASH_POINTS = (None, "stored", "sent", "bump_stored", "settled")
WALLET = wallet_from_wif(WIF, "testnet")
STATS: dict[str, float] = {"examples": 0, "steps": 0, "runs": 0, "crashes": 0, "completed": 0, "bumps": 0}


class _World:
    """One portal (event loop) and one SQLite database for every example; a fresh simulator per example."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, engine: AsyncEngine) -> None:
        self.portal = portal
        self.engine = engine


WORLD: _World | None = None


class PayoutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.w = WORLD
        self.sim = EsploraSim("testnet", clock=lambda: 1_700_000_000.0)
        self.sim.set_fees({"6": 5.0}, mempool_min=1.0)
        # A second Esplora endpoint: a view of the same node that lags behind (a replica behind a load balancer);
        # the client fails over to it while the primary answers 503.
        self.lagging = self.sim.lagging_view()
        self.settings = make_settings(
            BTC_PAYOUT_CONFIRMATIONS=CONFIRMATIONS,
            BTC_PAYOUT_BUMP_AFTER_BLOCKS=2,
            BTC_MAX_TX_FEE_USD="5",
            CB_BLOCKSTREAM_API_THRESHOLD=1_000_000,  # failover, not the breaker, is what this test exercises
        )
        self.metrics = Metrics(make_registry())
        self.breakers = Breakers(self.settings, self.metrics)
        self.funded = 0
        self.n = 0
        self.totals: dict[str, int] = {}  # recipient address -> row total
        self.completed: set[int] = set()
        self.processor = self._processor()
        STATS["examples"] += 1

    async def _route(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("server", ("",))[0] == "esplora2":
            STATS["lagging_calls"] = STATS.get("lagging_calls", 0) + 1
            await self.lagging.app(scope, receive, send)
        else:
            await self.sim.app(scope, receive, send)

    def _processor(self) -> PayoutProcessor:
        e_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self._route))
        p_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=PriceSim(60000.0).app))
        return PayoutProcessor(
            self.w.engine,
            EsploraClient(e_http, ["http://esplora", "http://esplora2"], self.breakers, self.metrics, deadline=5.0),
            PriceClient(p_http, "http://coingecko", self.breakers, self.metrics, deadline=5.0),
            self.settings,
            WALLET,
        )

    def call(self, fn: Any, *args: Any) -> Any:
        return self.w.portal.call(fn, *args)

    async def _rows(self) -> list[dict[str, Any]]:
        async with self.w.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(T).order_by(T.c.id))).mappings()]

    async def _candidates(self) -> list[dict[str, Any]]:
        async with self.w.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(C).order_by(C.c.id))).mappings()]

    # ------------------------------------------------------------------ set-up

    @initialize(
        coins=st.lists(st.integers(60_000, 400_000), min_size=1, max_size=4),
        swaps=st.lists(st.integers(10_000, 150_000), min_size=1, max_size=3),
    )
    def setup(self, coins: list[int], swaps: list[int]) -> None:
        async def wipe() -> None:
            async with self.w.engine.begin() as conn:
                await conn.execute(delete(C))
                await conn.execute(delete(T))

        self.call(wipe)
        for value in coins:
            self.sim.fund(WALLET.address, value)
            self.funded += value
        for total in swaps:
            self.swap(total)

    # ------------------------------------------------------------------ rules

    @rule(total=st.integers(10_000, 150_000))
    def swap(self, total: int) -> None:
        self.n += 1
        address = recipient(10_000 + self.n)
        self.totals[address] = total

        async def add() -> None:
            async with self.w.engine.begin() as conn:
                await conn.execute(
                    insert(T).values(
                        swap_transaction_hash="0x" + hashlib.sha256(b"prop %d" % self.n).hexdigest(),
                        btc_address=address,
                        subtotal=total + 3000,
                        service_fee=3000,
                        total=total,
                        status="pending",
                        attempts=0,
                    )
                )

        self.call(add)

    @rule(value=st.integers(50_000, 800_000))
    def fund(self, value: int) -> None:
        self.sim.fund(WALLET.address, value)
        self.funded += value

    @rule(crash_at=st.sampled_from(CRASH_POINTS))
    def run(self, crash_at: str | None) -> None:
        STATS["runs"] += 1
        crashed = self.call(self._run, crash_at)
        STATS["crashes"] += int(crashed)
        self._check_new_completions()

    @rule(crash_at=st.sampled_from(CRASH_POINTS))
    def tick(self, crash_at: str | None) -> None:
        """The common case, weighted up: a run (maybe crashing), a block, a run."""
        self.run(crash_at)
        self.sim.mine(1)
        self.run(None)

    @rule()
    def settle(self) -> None:
        """Calm weather: fees fall back, blocks come, the processor runs until the queue has drained."""
        self.sim.set_fees({"2": 10.0, "6": 5.0}, mempool_min=1.0)
        self.sim.faults.clear()
        for _ in range(2):
            self.run(None)
            self.sim.mine(CONFIRMATIONS)
        self.run(None)

    async def _run(self, crash_at: str | None) -> bool:
        fired = False
        with anyio.CancelScope() as scope:

            async def checkpoint(name: str, row_id: int) -> None:
                nonlocal fired
                if name == crash_at and not fired:
                    fired = True
                    scope.cancel()  # the process dies here: nothing after this point happens
                    await anyio.lowlevel.checkpoint()

            self.processor.checkpoint = checkpoint
            report = await self.processor.run()
            STATS["bumps"] += report.bumps.count("replaced")
            STATS["capped"] = STATS.get("capped", 0) + report.bumps.count("capped")
        self.processor.checkpoint = None
        return fired

    @rule(down=st.booleans(), lag=st.sampled_from([0, 1, 3]))
    def primary_endpoint(self, down: bool, lag: int) -> None:
        """The primary Esplora answers 503 (calls fail over to the lagging replica) or comes back."""
        self.lagging.lag = lag
        if down:
            self.sim.faults.set(Fault(path="*", status=503))
        else:
            self.sim.faults.clear()

    @rule()
    def restart(self) -> None:
        """A new process: no in-memory state survives (caches, clients)."""
        self.processor = self._processor()

    @rule(blocks=st.integers(1, 3), min_fee_rate=st.sampled_from([0.0, 0.0, 8.0]))
    def mine(self, blocks: int, min_fee_rate: float) -> None:
        self.sim.mine(blocks, min_fee_rate)

    @precondition(lambda self: bool(self.sim.mempool))
    @rule(data=st.data())
    def evict(self, data: st.DataObject) -> None:
        self.sim.evict(data.draw(st.sampled_from(sorted(self.sim.mempool))))

    @rule(mempool_min=st.sampled_from([1.0, 6.0, 15.0]), lag=st.sampled_from([-3.0, 0.0, 2.0, 30.0, 70.0]))
    def fees(self, mempool_min: float, lag: float) -> None:
        """A fee spike (or fall): the mempool minimum moves and evicts what pays less; the estimate usually
        follows it (sometimes lags below it, sometimes overshoots past the fee cap)."""
        estimate = max(1.0, mempool_min + lag)
        evicted = self.sim.set_fees({"2": estimate * 2, "6": estimate}, mempool_min=mempool_min)
        STATS["fee_evictions"] = STATS.get("fee_evictions", 0) + len(evicted)
        STATS["fee_rules"] = STATS.get("fee_rules", 0) + 1
        self.run(None)  # the next run sees it (a refusal for the fee, or the bump rule)

    @precondition(lambda self: bool(self.sim.utxos_json(WALLET.address)) or bool(self.sim.mempool))
    @rule(data=st.data(), confirm=st.booleans())
    def foreign_spend(self, data: st.DataObject, confirm: bool) -> None:
        """Someone else spends a wallet coin (one that a candidate may be spending)."""
        coins = sorted(
            (i.txid, i.vout)
            for txid in self.sim.mempool
            for i in self.sim.txs[txid].vin
            if i.prevout.address == WALLET.address
        ) + sorted((u["txid"], u["vout"]) for u in self.sim.utxos_json(WALLET.address) if u["status"]["confirmed"])
        if not coins:
            return
        txid, vout = data.draw(st.sampled_from(coins))
        with contextlib.suppress(ControlError):  # not spendable right now (e.g. its parent was replaced)
            self.sim.spend(txid, vout, confirm=confirm)

    @precondition(lambda self: any(self.sim.txs[t].evicted for t in self.sim.accepted))
    @rule(data=st.data())
    def resurface(self, data: st.DataObject) -> None:
        """A transaction this node dropped (evicted, replaced) comes back: another node's mempool or a miner
        that never saw the replacement still had it. Only the candidates-conflict rule keeps this from paying
        twice."""
        gone = sorted(t for t in self.sim.accepted if self.sim.txs[t].evicted)
        txid = data.draw(st.sampled_from(gone))
        with contextlib.suppress(BroadcastRejected):
            self.sim.broadcast(self.sim.txs[txid].raw.hex())

    @rule(big_coin=st.booleans())
    def fee_war(self, big_coin: bool) -> None:
        """Fees jump (our mempool transactions are evicted), the processor bumps, and a miner that never saw the
        replacements mines what it still had: every dropped transaction comes back, then a block."""
        if big_coin:
            self.fund(900_000)
        self.sim.set_fees({"2": 40.0, "6": 20.0}, mempool_min=15.0)
        self.run(None)
        self.sim.set_fees({"2": 10.0, "6": 5.0}, mempool_min=1.0)  # the spike is over
        for txid in [t for t in self.sim.accepted if self.sim.txs[t].evicted]:
            with contextlib.suppress(BroadcastRejected):
                self.sim.broadcast(self.sim.txs[txid].raw.hex())
        self.sim.mine(1)

    @precondition(lambda self: len(self.sim.blocks) > 3)
    @rule(drop=st.booleans())
    def reorg(self, drop: bool) -> None:
        self.sim.reorg(1, drop=drop)

    # ------------------------------------------------------------------ invariants

    def _check_new_completions(self) -> None:
        rows = self.call(self._rows)
        for row in rows:
            if row["status"] == "completed" and row["id"] not in self.completed:
                self.completed.add(row["id"])
                STATS["completed"] += 1
                assert self.sim.confirmations(row["btc_transaction_hash"]) >= CONFIRMATIONS, row
                assert row["confirmations"] >= CONFIRMATIONS

    @invariant()
    def paid_at_most_once_and_exactly_the_total(self) -> None:
        STATS["steps"] += 1
        confirmed = [p for p in self.sim.payments() if p["status"] == "confirmed"]
        counts = Counter(p["address"] for p in confirmed)
        assert all(n == 1 for n in counts.values()), counts
        for p in confirmed:
            assert p["value"] == self.totals[p["address"]]

    def teardown(self) -> None:
        """Treasury = start − Σ paid − Σ fees − Σ coins foreign spends took, on the confirmed chain."""
        try:
            rows = self.call(self._rows)
            cands = {c["txid"]: c for c in self.call(self._candidates)}
            stats = self.sim.address_json(WALLET.address)["chain_stats"]
            balance = stats["funded_txo_sum"] - stats["spent_txo_sum"]
            inflow = paid = fees = foreign = 0
            for tx in self.sim.txs.values():
                if tx.state != "confirmed":
                    continue
                spent = sum(i.prevout.value for i in tx.vin if i.prevout.address == WALLET.address)
                if not spent:  # funding from outside (a reorg may have taken some of it away again)
                    inflow += sum(o.value for o in tx.vout if o.address == WALLET.address)
                    continue
                if tx.txid in cands:
                    paid += sum(o.value for o in tx.vout if o.address != WALLET.address)
                    fees += tx.fee
                    assert tx.fee == int(cands[tx.txid]["fee"])
                else:
                    foreign += spent
            assert balance == inflow - paid - fees - foreign
            assert inflow <= self.funded
            for row in rows:
                STATS["final_" + row["status"] + "_" + str(row["failure_reason"])] = (
                    STATS.get("final_" + row["status"] + "_" + str(row["failure_reason"]), 0) + 1
                )
                if row["status"] == "completed":
                    assert int(row["network_fee"]) == int(cands[row["btc_transaction_hash"]]["fee"])
        finally:
            for client in (self.processor.esplora.upstream.http, self.processor.prices.upstream.http):
                self.call(client.aclose)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[_World]:
    global WORLD
    with anyio.from_thread.start_blocking_portal() as portal:
        engine = portal.call(_engine, f"sqlite+aiosqlite:///{tmp_path / 'prop.sqlite3'}")
        WORLD = _World(portal, engine)
        try:
            yield WORLD
        finally:
            WORLD = None
            portal.call(engine.dispose)


async def _engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _fast(dbapi_conn: Any, _: Any) -> None:
        # A throw-away database: no fsync per commit (the test is about the processor, not durability).
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=MEMORY")
        cursor.close()

    await upgrade(engine)
    return engine


def test_payouts_never_pay_twice_and_finish(world: _World) -> None:
    started = time.perf_counter()
    PayoutMachine.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=12,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    PayoutMachine.TestCase().runTest()
    elapsed = time.perf_counter() - started
    print(f"payout property test: {STATS} in {elapsed:.1f} s")
    assert STATS["examples"] >= EXAMPLES
    if EXAMPLES >= 1000:  # the sequences reached what they are meant to exercise (a short run may not)
        assert STATS["completed"] > 0 and STATS["crashes"] > 0 and STATS["bumps"] > 0
