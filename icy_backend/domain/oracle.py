"""The oracle (SPEC §9): circulating ICY, treasury BTC and the ICY/BTC ratio, in exact integers, cached.

* circulated ICY (wei) = totalSupply - sum(balanceOf(locked)) + Mochi Pay (a Mochi Pay failure counts as 0
  and becomes a warning);
* treasury BTC (sats) = chain funded - chain spent - mempool spent (incoming coins count once confirmed,
  outgoing ones at once; fix: the old one counted unconfirmed incoming coins);
* ratio = ICY per 1 BTC x 10^8 = circ_wei * 10^8 * 10^8 // (sats * 10^18); treasury 0 -> 0.

Each value is cached for ``ttl`` (5 min) with single-flight refresh; ``fresh=True`` bypasses the cache (joining
a computation already in flight) and refreshes it.

Pricing (SPEC §9 "Pricing uses only complete figures") — the 1 % guard of ``generate-signature``, the
conversion of swap requests and the indexers' price-outlier check — goes through :meth:`OracleService.pricing`:

* circulated ICY only with every addend known: when Mochi Pay failed, its last good figure stands in while it
  is younger than ``MOCHI_MAX_AGE``; otherwise :class:`OracleIncomplete` (routes: 503 ``oracle_incomplete``).
  The display routes keep the partial figure and its warning.
* treasury BTC minus the totals of payouts owed but not yet in the mempool (``pending``, ``held``,
  ``broadcasting``), read from the database at every call (concurrent calls share one read) so replicas agree.
  The cached treasury figure is up to 5 minutes old, so the payouts owed when it was read, and every payout
  created since, stay subtracted until it is read again, whatever their state now: their coins are still in
  that figure even once they reach the mempool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from sqlalchemy import select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import NotConfigured, UpstreamError, error_class
from icy_backend.clients.factory import Clients
from icy_backend.db.tables import icy_locked_treasuries, onchain_btc_processed_transactions
from icy_backend.domain.cache import Lookup, SingleFlightCache
from icy_backend.metrics.business import (
    CacheType,
    business_operation,
    cache_hit,
    cache_miss,
    watch_oracle_data_age,
)
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

CACHE_TTL = 300.0
WEI_PER_ICY = 10**18
SATS_PER_BTC = 10**8
RATIO_SCALE = 10**8
OWED_STATUSES = ("pending", "held", "broadcasting")  # owed, but not in the mempool yet
# A cached circulated-ICY figure missing Mochi Pay is recomputed for pricing once it is this old (seconds), so
# pricing resumes soon after Mochi Pay is back without every signature request hitting the upstreams.
INCOMPLETE_RETRY_AFTER = 30.0

T = TypeVar("T")


def icy_btc_ratio(circulated_wei: int, treasury_sats: int) -> int:
    """ICY per 1 BTC, scaled by 10^8: ``circ * 10^8 * 10^8 // (sats * 10^18)``; 0 when the treasury is empty."""
    if treasury_sats <= 0 or circulated_wei <= 0:
        return 0
    return circulated_wei * SATS_PER_BTC * RATIO_SCALE // (treasury_sats * WEI_PER_ICY)


def treasury_sats(chain_funded: int, chain_spent: int, mempool_spent: int) -> int:
    """Spendable treasury balance: confirmed coins minus everything already being spent."""
    return max(chain_funded - chain_spent - mempool_spent, 0)


class OracleIncomplete(UpstreamError):
    """Pricing refused: Mochi Pay's addend of circulating ICY is unknown and no good figure of it is younger than
    ``MOCHI_MAX_AGE``. Routes answer 503 ``oracle_incomplete``; jobs wait."""

    error_class = "oracle_incomplete"

    def __init__(self, detail: str = "") -> None:
        super().__init__("mochi_pay", detail)


@dataclass(frozen=True)
class CirculatedIcy:
    """Circulating ICY in wei, with the warnings of a partial computation (e.g. Mochi Pay counted as 0).

    ``onchain`` is totalSupply - sum(locked balances) (not clamped); ``mochi`` is Mochi Pay's addend, None when
    Mochi Pay failed (``value`` then counts it as 0: the display figure). Mochi Pay not configured counts 0.
    """

    value: int
    warnings: tuple[str, ...] = ()
    onchain: int = 0
    mochi: int | None = 0

    @property
    def complete(self) -> bool:
        return self.mochi is not None


@dataclass(frozen=True)
class Pricing:
    """The figures that price money: every addend known, the treasury net of what payouts owe."""

    circulated: int  # wei
    treasury: int  # sats, net of ``owed``
    owed: int  # sats owed by pending, held and broadcasting payouts
    ratio: int  # ICY per 1 BTC x 10^8; 0 = nothing can be priced


@dataclass(frozen=True)
class _TreasurySnapshot:
    """Treasury sats and the payouts owed when it was read (DB first, then Esplora)."""

    sats: int
    owed: dict[int, int]  # payout id -> total, owed at the time of the read
    max_id: int  # highest payout id at the time of the read


async def gather(*calls: Callable[[], Awaitable[Any]], limit: int = 16) -> list[Any]:
    """Run ``calls`` concurrently in a task group; the first failure cancels the rest and is raised as is
    (not wrapped in an exception group)."""
    results: list[Any] = [None] * len(calls)
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(limit)

    async def run(i: int, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            async with limiter:
                results[i] = await call()
        except Exception as exc:
            errors.append(exc)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(run, i, call)
    if errors:
        raise errors[0]
    return results


def _bind(fn: Callable[..., Awaitable[T]], *args: Any) -> Callable[[], Awaitable[T]]:
    return lambda: fn(*args)


class OracleService:
    """Oracle values with real cache metrics. Put on ``request.state.oracle`` by the app."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        engine: AsyncEngine,
        clients: Clients,
        *,
        ttl: float = CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine = engine
        self.clients = clients
        self._clock = clock
        self._circulated = SingleFlightCache(self._compute_circulated, ttl, clock)
        self._treasury = SingleFlightCache(self._compute_treasury, ttl, clock)
        self._ratio = SingleFlightCache(self._compute_ratio, ttl, clock)
        # icy_backend_oracle_data_age_seconds: read from the caches' fetched-at times at every scrape.
        watch_oracle_data_age(metrics, "circulated_icy", self._circulated.age)
        watch_oracle_data_age(metrics, "treasury_btc", self._treasury.age)
        watch_oracle_data_age(metrics, "icy_btc_ratio", self._ratio.age)
        self._pricing_treasury = SingleFlightCache(self._compute_pricing_treasury, ttl, clock)
        # Never cached (TTL 0): concurrent pricing calls share one read of the owed payouts, later ones read anew.
        self._owed_now = SingleFlightCache(self._read_owed_now, 0.0, clock)
        self._mochi_good: tuple[int, float] | None = None  # last good Mochi Pay figure and when it was read

    # ---- public API ----------------------------------------------------------------------------------

    async def circulated_icy(self, *, fresh: bool = False) -> CirculatedIcy:
        """Circulating ICY (wei) and its warnings; cached unless ``fresh``."""
        async with business_operation(self.metrics, "circulated_icy", "oracle"):
            return (await self._lookup(self._circulated, "circulated_icy", fresh)).value

    async def treasury_btc(self, *, fresh: bool = False) -> int:
        """Treasury balance in sats; cached unless ``fresh``."""
        async with business_operation(self.metrics, "treasury_btc", "oracle"):
            return (await self._lookup(self._treasury, "treasury_btc", fresh)).value

    async def icy_btc_ratio(self, *, fresh: bool = False) -> int:
        """ICY per 1 BTC x 10^8. ``fresh`` recomputes (and refreshes all three cached values)."""
        async with business_operation(self.metrics, "icy_btc_ratio", "oracle"):
            return (await self._lookup(self._ratio, "icy_btc_ratio", fresh)).value

    async def pricing(self) -> Pricing:
        """The complete figures for pricing; raises :class:`OracleIncomplete` (Mochi Pay unknown for too long),
        :class:`UpstreamError` or a database error. Uses the caches like the cached ratio."""
        circulated, (treasury, owed) = await gather(self._pricing_circulated, self._pricing_treasury_sats)
        return Pricing(circulated, treasury, owed, icy_btc_ratio(circulated, treasury))

    async def pricing_ratio(self) -> int:
        """ICY per 1 BTC x 10^8 from complete figures (see :meth:`pricing`); 0 when nothing can be priced."""
        return (await self.pricing()).ratio

    @property
    def computations(self) -> dict[str, int]:
        """How many upstream computations each value needed (for tests and debugging)."""
        return {
            "circulated_icy": self._circulated.computations,
            "treasury_btc": self._treasury.computations,
            "icy_btc_ratio": self._ratio.computations,
        }

    # ---- internals -----------------------------------------------------------------------------------

    async def _lookup(self, cache: SingleFlightCache[T], kind: CacheType, fresh: bool) -> Lookup[T]:
        result = await cache.get(fresh=fresh)
        if result.hit:
            cache_hit(self.metrics, kind)
        else:
            cache_miss(self.metrics, kind)
        return result

    async def _locked_addresses(self) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(icy_locked_treasuries.c.address))
            return [str(r[0]) for r in rows]

    async def _compute_circulated(self) -> CirculatedIcy:
        token = self.settings.BLOCKCHAIN_ICY_CONTRACT_ADDR
        if not token:
            raise NotConfigured("base_rpc", "BLOCKCHAIN_ICY_CONTRACT_ADDR")
        evm = self.clients.evm
        locked = await self._locked_addresses()
        supply, *balances = await gather(
            lambda: evm.total_supply(token),
            *[_bind(evm.balance_of, token, a) for a in locked],
        )
        warnings: list[str] = []
        mochi: int | None = 0
        if self.clients.mochi is not None:
            try:
                mochi = await self.clients.mochi.circulated_icy()
                self._mochi_good = (mochi, self._clock())
            except Exception as exc:
                mochi = None
                cls = error_class(exc)
                log.warning("mochi pay unavailable (%s): counted as 0", cls)
                warnings.append(f"mochi_pay unavailable ({cls}): its circulating ICY counted as 0")
        onchain = supply - sum(balances)
        value = onchain + (mochi or 0)
        if value < 0:
            log.warning("locked ICY balances exceed the total supply: circulating ICY counted as 0")
            warnings.append("locked balances exceed the total supply: circulating ICY counted as 0")
            value = 0
        return CirculatedIcy(value, tuple(warnings), onchain, mochi)

    async def _compute_treasury(self) -> int:
        address = self.settings.BLOCKCHAIN_BTC_TREASURY_ADDRESS
        if not address:
            raise NotConfigured("blockstream_api", "BLOCKCHAIN_BTC_TREASURY_ADDRESS")
        stats = await self.clients.esplora.address_stats(address)
        return treasury_sats(stats.chain_funded, stats.chain_spent, stats.mempool_spent)

    async def _pricing_circulated(self) -> int:
        lookup = await self._lookup(self._circulated, "circulated_icy", False)
        if not lookup.value.complete and self._clock() - lookup.fetched_at >= INCOMPLETE_RETRY_AFTER:
            lookup = await self._lookup(self._circulated, "circulated_icy", True)  # Mochi Pay may be back
        circulated = lookup.value
        if circulated.complete:
            return circulated.value
        good = self._mochi_good
        if good is None:
            raise OracleIncomplete("no good Mochi Pay figure since start")
        if self._clock() - good[1] >= self.settings.MOCHI_MAX_AGE:
            raise OracleIncomplete("the last good Mochi Pay figure is older than MOCHI_MAX_AGE")
        return max(circulated.onchain + good[0], 0)

    async def _owed_rows(self, newer_than: int | None) -> dict[int, int]:
        """Payouts owed but not in the mempool (id -> total); with ``newer_than``, also every payout created
        after that id that is not ``failed``. Two index scans (status; primary key), not one OR over the table."""
        P = onchain_btc_processed_transactions
        query: Any = select(P.c.id, P.c.total).where(P.c.status.in_(OWED_STATUSES))
        if newer_than is not None:
            query = union_all(query, select(P.c.id, P.c.total).where(P.c.id > newer_than, P.c.status != "failed"))
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return {int(i): int(total) for i, total in rows}

    async def _max_payout_id(self) -> int:
        P = onchain_btc_processed_transactions
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(P.c.id).order_by(P.c.id.desc()).limit(1)) or 0)

    async def _compute_pricing_treasury(self) -> _TreasurySnapshot:
        # The database first, Esplora second: a payout that reaches the mempool in between is subtracted twice
        # (prices ICY lower: safe), never not at all.
        max_id = await self._max_payout_id()
        owed = {i: t for i, t in (await self._owed_rows(None)).items() if i <= max_id}
        sats = (await self._lookup(self._treasury, "treasury_btc", True)).value
        return _TreasurySnapshot(sats, owed, max_id)

    async def _pricing_treasury_sats(self) -> tuple[int, int]:
        """(treasury for pricing, owed) from the cached treasury snapshot and the payouts of now.

        The snapshot's sats still hold the coins of every payout owed when it was read, and of every payout
        created since (whatever its state now: one may already be in the mempool, unseen by the snapshot), so
        those are subtracted along with the payouts owed now. Payouts ``confirming`` at the snapshot are in its
        mempool-spent figure already.
        """
        snapshot, now = (await self._owed_now.get()).value
        owed = sum(now.values()) + sum(t for i, t in snapshot.owed.items() if i not in now)
        return max(snapshot.sats - owed, 0), owed

    async def _read_owed_now(self) -> tuple[_TreasurySnapshot, dict[int, int]]:
        snapshot = (await self._pricing_treasury.get()).value
        return snapshot, await self._owed_rows(snapshot.max_id)

    async def _compute_ratio(self) -> int:
        circulated, sats = await gather(
            lambda: self._lookup(self._circulated, "circulated_icy", True),
            lambda: self._lookup(self._treasury, "treasury_btc", True),
        )
        return icy_btc_ratio(circulated.value.value, sats.value)


__all__ = [
    "CACHE_TTL",
    "OWED_STATUSES",
    "CirculatedIcy",
    "OracleIncomplete",
    "OracleService",
    "Pricing",
    "gather",
    "icy_btc_ratio",
    "treasury_sats",
]
