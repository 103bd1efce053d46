"""The oracle (SPEC §9): circulating ICY, treasury BTC and the ICY/BTC ratio, in exact integers, cached.

* circulated ICY (wei) = totalSupply - sum(balanceOf(locked)) + Mochi Pay (a Mochi Pay failure counts as 0
  and becomes a warning);
* treasury BTC (sats) = chain funded - chain spent - mempool spent (incoming coins count once confirmed,
  outgoing ones at once; fix: the old one counted unconfirmed incoming coins);
* ratio = ICY per 1 BTC x 10^8 = circ_wei * 10^8 * 10^8 // (sats * 10^18); treasury 0 -> 0.

Each value is cached for ``ttl`` (5 min) with single-flight refresh; ``fresh=True`` bypasses the cache (joining
a computation already in flight) and refreshes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import NotConfigured, error_class
from icy_backend.clients.factory import Clients
from icy_backend.db.tables import icy_locked_treasuries
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

T = TypeVar("T")


def icy_btc_ratio(circulated_wei: int, treasury_sats: int) -> int:
    """ICY per 1 BTC, scaled by 10^8: ``circ * 10^8 * 10^8 // (sats * 10^18)``; 0 when the treasury is empty."""
    if treasury_sats <= 0 or circulated_wei <= 0:
        return 0
    return circulated_wei * SATS_PER_BTC * RATIO_SCALE // (treasury_sats * WEI_PER_ICY)


def treasury_sats(chain_funded: int, chain_spent: int, mempool_spent: int) -> int:
    """Spendable treasury balance: confirmed coins minus everything already being spent."""
    return max(chain_funded - chain_spent - mempool_spent, 0)


@dataclass(frozen=True)
class CirculatedIcy:
    """Circulating ICY in wei, with the warnings of a partial computation (e.g. Mochi Pay counted as 0)."""

    value: int
    warnings: tuple[str, ...] = ()


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
        self._circulated = SingleFlightCache(self._compute_circulated, ttl, clock)
        self._treasury = SingleFlightCache(self._compute_treasury, ttl, clock)
        self._ratio = SingleFlightCache(self._compute_ratio, ttl, clock)
        # icy_backend_oracle_data_age_seconds: read from the caches' fetched-at times at every scrape.
        watch_oracle_data_age(metrics, "circulated_icy", self._circulated.age)
        watch_oracle_data_age(metrics, "treasury_btc", self._treasury.age)
        watch_oracle_data_age(metrics, "icy_btc_ratio", self._ratio.age)

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
        mochi = 0
        if self.clients.mochi is not None:
            try:
                mochi = await self.clients.mochi.circulated_icy()
            except Exception as exc:
                cls = error_class(exc)
                log.warning("mochi pay unavailable (%s): counted as 0", cls)
                warnings.append(f"mochi_pay unavailable ({cls}): its circulating ICY counted as 0")
        value = supply - sum(balances) + mochi
        if value < 0:
            log.warning("locked ICY balances exceed the total supply: circulating ICY counted as 0")
            warnings.append("locked balances exceed the total supply: circulating ICY counted as 0")
            value = 0
        return CirculatedIcy(value, tuple(warnings))

    async def _compute_treasury(self) -> int:
        address = self.settings.BLOCKCHAIN_BTC_TREASURY_ADDRESS
        if not address:
            raise NotConfigured("blockstream_api", "BLOCKCHAIN_BTC_TREASURY_ADDRESS")
        stats = await self.clients.esplora.address_stats(address)
        return treasury_sats(stats.chain_funded, stats.chain_spent, stats.mempool_spent)

    async def _compute_ratio(self) -> int:
        circulated, sats = await gather(
            lambda: self._lookup(self._circulated, "circulated_icy", True),
            lambda: self._lookup(self._treasury, "treasury_btc", True),
        )
        return icy_btc_ratio(circulated.value.value, sats.value)


__all__ = ["CACHE_TTL", "CirculatedIcy", "OracleService", "gather", "icy_btc_ratio", "treasury_sats"]
