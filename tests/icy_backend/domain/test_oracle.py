"""The oracle against the simulators and real PostgreSQL: exact values, cache, single flight, metrics."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from fractions import Fraction

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import UpstreamError
from icy_backend.domain.cache import SingleFlightCache
from icy_backend.domain.oracle import OracleService, icy_btc_ratio, treasury_sats
from icy_backend.domain.sandbox import seed_locked_treasuries
from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.faults import Fault
from tests.icy_backend.domain.support import SimEnv, metric, sim_env

ICY = 10**18


@given(circ=st.integers(0, 10**40), sats=st.integers(0, 21 * 10**14))
def test_ratio_exact_against_fraction(circ: int, sats: int) -> None:
    expected = 0 if sats == 0 or circ == 0 else math.floor(Fraction(circ, 10**18) / Fraction(sats, 10**8) * 10**8)
    assert icy_btc_ratio(circ, sats) == expected


def test_ratio_examples() -> None:
    assert icy_btc_ratio(1 * ICY, 2 * 10**8) == 50_000_000  # 1 ICY and 2 BTC -> 0.5 ICY per BTC
    assert icy_btc_ratio(10**30, 0) == 0
    assert icy_btc_ratio(0, 10**8) == 0
    # Beyond float precision: 10^27 + 1 wei over 1 sat.
    assert icy_btc_ratio(10**27 + 1, 1) == (10**27 + 1) * 10**16 // 10**18


def test_treasury_formula() -> None:
    assert treasury_sats(1000, 300, 200) == 500
    assert treasury_sats(100, 0, 200) == 0  # never negative


@pytest.fixture
async def env(engine: AsyncEngine) -> AsyncIterator[SimEnv]:
    async with sim_env() as env:
        await seed_locked_treasuries(engine, [env.sims.locked_treasury])
        env.sims.service_knows_locked_treasury = True  # the service's table lists it
        yield env


def _oracle(env: SimEnv, engine: AsyncEngine, **kw: object) -> OracleService:
    return OracleService(env.settings, env.metrics, engine, env.clients, **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.postgres
async def test_circulated_icy_exact_with_large_values(env: SimEnv, engine: AsyncEngine) -> None:
    sims = env.sims
    huge = 123_456_789 * 10**40 + 7  # far beyond 2^63 and float precision
    sims.evm.mint(sims.holders[0], huge)
    sims.evm.mine_block()
    sims.mochi.set_value(10**30 + 3)
    oracle = _oracle(env, engine)
    result = await oracle.circulated_icy(fresh=True)
    expected = sims.evm.total_supply - sims.evm.balance_of(sims.locked_treasury) + 10**30 + 3
    assert result.value == expected
    assert result.warnings == ()
    assert await oracle.treasury_btc() == 250_000_000
    assert await oracle.icy_btc_ratio(fresh=True) == expected * 10**16 // (250_000_000 * 10**18)


@pytest.mark.anyio
@pytest.mark.postgres
async def test_locked_treasuries_are_excluded(env: SimEnv, engine: AsyncEngine) -> None:
    oracle = _oracle(env, engine)
    with_locked = (await oracle.circulated_icy(fresh=True)).value
    extra = env.sims.holders[1]
    await seed_locked_treasuries(engine, [extra, extra])
    without = (await oracle.circulated_icy(fresh=True)).value
    assert with_locked - without == env.sims.evm.balance_of(extra) == 20_000 * ICY


@pytest.mark.anyio
@pytest.mark.postgres
async def test_mochi_failure_counts_zero_with_warning(env: SimEnv, engine: AsyncEngine) -> None:
    env.sims.mochi.faults.set(Fault(path="*", status=500))
    oracle = _oracle(env, engine)
    result = await oracle.circulated_icy(fresh=True)
    assert result.value == env.sims.circulated_wei() - env.sims.mochi.value_wei
    assert len(result.warnings) == 1
    assert "mochi_pay" in result.warnings[0]
    assert "http://" not in result.warnings[0]


@pytest.mark.anyio
@pytest.mark.postgres
async def test_treasury_counts_incoming_once_confirmed_and_outgoing_at_once(env: SimEnv, engine: AsyncEngine) -> None:
    sims = env.sims
    oracle = _oracle(env, engine)
    treasury = sims.btc_wallet.address
    assert await oracle.treasury_btc(fresh=True) == 250_000_000
    # Unconfirmed incoming coins do not count yet (fix: the old balance added the mempool).
    sims.esplora.fund(treasury, 1_000_000, confirmed=False)
    assert await oracle.treasury_btc(fresh=True) == 250_000_000
    sims.esplora.mine()
    assert await oracle.treasury_btc(fresh=True) == 251_000_000
    # An unconfirmed spend counts at once: the whole spent coin leaves, the change counts once confirmed.
    utxo = next(u for u in sims.esplora.utxos_json(treasury) if u["value"] == 1_000_000)
    other = P2wpkhKey.from_seed(b"someone else", "test").address
    raw = sims.btc_wallet.sign_spend([(utxo["txid"], utxo["vout"], 1_000_000)], [(other, 400_000), (treasury, 599_000)])
    sims.esplora.broadcast(raw)
    assert await oracle.treasury_btc(fresh=True) == 250_000_000
    sims.esplora.mine()
    assert await oracle.treasury_btc(fresh=True) == 250_599_000


@pytest.mark.anyio
@pytest.mark.postgres
async def test_cache_hits_misses_and_age(env: SimEnv, engine: AsyncEngine) -> None:
    now = [1000.0]
    oracle = _oracle(env, engine, clock=lambda: now[0])
    m = env.metrics
    labels = {"cache_type": "icy_btc_ratio"}
    first = await oracle.icy_btc_ratio()
    assert metric(m, "icy_backend_cache_operations_total", {**labels, "operation": "miss"}) == 1
    env.counter.reset()
    now[0] += 100
    assert await oracle.icy_btc_ratio() == first
    assert metric(m, "icy_backend_cache_operations_total", {**labels, "operation": "hit"}) == 1
    assert env.counter.counts == {}  # a real hit: no upstream request at all
    assert metric(m, "icy_backend_oracle_data_age_seconds", {"data_type": "icy_btc_ratio"}) == 100
    # A new holder changes nothing until the TTL passes; the realtime route sees it at once.
    env.sims.mochi.set_value(env.sims.mochi.value_wei + 10**24)
    assert await oracle.icy_btc_ratio() == first
    fresh = await oracle.icy_btc_ratio(fresh=True)
    assert fresh > first
    assert await oracle.icy_btc_ratio() == fresh  # the realtime call refreshed the cache
    now[0] += 301
    env.counter.reset()
    await oracle.icy_btc_ratio()
    assert env.counter.counts.get("/evm", 0) > 0  # expired: recomputed
    assert metric(m, "icy_backend_cache_operations_total", {**labels, "operation": "miss"}) == 3
    ok = {"operation_type": "icy_btc_ratio", "category": "oracle", "status": "success"}
    assert metric(m, "icy_backend_business_operations_total", ok) == 6


@pytest.mark.anyio
@pytest.mark.postgres
async def test_data_age_keeps_growing_while_refreshes_fail(env: SimEnv, engine: AsyncEngine) -> None:
    """The age is read at scrape time from when the value was fetched (fix: it was set only on success)."""
    now = [1000.0]
    oracle = _oracle(env, engine, clock=lambda: now[0])
    m = env.metrics
    age = {"data_type": "treasury_btc"}
    assert m.registry.get_sample_value("icy_backend_oracle_data_age_seconds", age) is None  # nothing fetched yet
    await oracle.treasury_btc()
    assert metric(m, "icy_backend_oracle_data_age_seconds", age) == 0
    env.sims.esplora.faults.set(Fault(path="*", status=503))
    for elapsed in (400, 700, 1300):
        now[0] = 1000.0 + elapsed
        with pytest.raises(UpstreamError):  # the TTL (300 s) passed and every refresh fails
            await oracle.treasury_btc()
        assert metric(m, "icy_backend_oracle_data_age_seconds", age) == elapsed


@pytest.mark.anyio
@pytest.mark.postgres
async def test_single_flight_100_concurrent_requests(env: SimEnv, engine: AsyncEngine) -> None:
    oracle = _oracle(env, engine)
    env.sims.evm.faults.set(Fault(path="*", latency_ms=200))  # keep the first computation in flight
    env.counter.reset()
    results: list[int] = []

    async def one() -> None:
        results.append(await oracle.icy_btc_ratio())

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(one)
    assert len(set(results)) == 1
    assert len(results) == 100
    assert oracle.computations == {"circulated_icy": 1, "treasury_btc": 1, "icy_btc_ratio": 1}
    # One computation upstream: totalSupply + one balanceOf, one address lookup, one Mochi Pay call.
    assert env.counter.counts == {"/evm": 2, "/esplora": 1, "/mochi": 1}


@pytest.mark.anyio
async def test_single_flight_survives_a_cancelled_leader() -> None:
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.2)
        return calls

    cache: SingleFlightCache[int] = SingleFlightCache(compute, ttl=60)
    got: list[int] = []

    async def follower() -> None:
        await anyio.sleep(0.05)
        got.append((await cache.get()).value)

    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(0.1):
            tg.start_soon(follower)
            await cache.get()  # the leader gives up (a client going away)
    assert got == [2]  # the follower took over and computed once more


@pytest.mark.anyio
async def test_single_flight_shares_errors_and_does_not_cache_them() -> None:
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.05)
        if calls == 1:
            raise TimeoutError("upstream")
        return 7

    cache: SingleFlightCache[int] = SingleFlightCache(compute, ttl=60)
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await cache.get()
        except TimeoutError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert len(errors) == 5
    assert calls == 1
    assert (await cache.get()).value == 7


@pytest.mark.anyio
@pytest.mark.postgres
async def test_hanging_mochi_pay_costs_its_short_deadline_not_the_call_deadline(
    env: SimEnv, engine: AsyncEngine
) -> None:
    # Found by the e2e fault matrix: a hanging optional source held circulated ICY for the full 10 s deadline.
    env.sims.mochi.faults.set(Fault(path="*", hang=True))
    oracle = _oracle(env, engine)
    started = anyio.current_time()
    result = await oracle.circulated_icy(fresh=True)
    assert anyio.current_time() - started < 5
    assert result.value == env.sims.circulated_wei() - env.sims.mochi.value_wei
    assert "mochi_pay" in result.warnings[0]
