"""``/api/v1/oracle/*`` over HTTP: enveloped string values, 503 with an error class when upstreams fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.domain.oracle import OracleService
from icy_backend.domain.sandbox import seed_locked_treasuries
from icy_backend.routes.oracle import routes
from icy_backend.sim.faults import Fault
from tests.icy_backend.domain.support import SimEnv, client_for, make_app, sim_env

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
async def env(engine: AsyncEngine) -> AsyncIterator[SimEnv]:
    async with sim_env() as env:
        await seed_locked_treasuries(engine, [env.sims.locked_treasury])
        env.sims.service_knows_locked_treasury = True  # the service's table lists it
        yield env


def _app(env: SimEnv, engine: AsyncEngine) -> Any:
    oracle = OracleService(env.settings, env.metrics, engine, env.clients)
    state = {"oracle": oracle, "engine": engine, "settings": env.settings, "clients": env.clients}
    return make_app(routes, state)


async def test_values_as_strings_with_decimals(env: SimEnv, engine: AsyncEngine) -> None:
    sims = env.sims
    circ = sims.circulated_wei()
    async with client_for(_app(env, engine)) as client:
        r = await client.get("/api/v1/oracle/circulated-icy")
        assert r.status_code == 200
        assert r.json() == {"data": {"value": str(circ), "decimal": 18}}
        r = await client.get("/api/v1/oracle/treasury-btc")
        assert r.json() == {"data": {"value": "250000000", "decimal": 8}}
        ratio = str(circ * 10**16 // (250_000_000 * 10**18))
        assert (await client.get("/api/v1/oracle/icy-btc-ratio")).json()["data"] == {"value": ratio, "decimal": 8}
        cached = await client.get("/api/v1/oracle/icy-btc-ratio-cached")
        assert cached.json()["data"] == {"value": ratio, "decimal": 8}


async def test_empty_treasury_gives_ratio_zero(env: SimEnv, engine: AsyncEngine) -> None:
    from icy_backend.sim.btc_wallet import P2wpkhKey

    empty = P2wpkhKey.from_seed(b"empty treasury", "test").address
    env.settings.BLOCKCHAIN_BTC_TREASURY_ADDRESS = empty
    async with client_for(_app(env, engine)) as client:
        r = await client.get("/api/v1/oracle/icy-btc-ratio")
        assert r.status_code == 200
        assert r.json()["data"] == {"value": "0", "decimal": 8}


async def test_upstream_failure_is_503_with_error_class(env: SimEnv, engine: AsyncEngine) -> None:
    env.sims.esplora.faults.set(Fault(path="*", status=503))
    async with client_for(_app(env, engine)) as client:
        r = await client.get("/api/v1/oracle/treasury-btc")
        assert r.status_code == 503
        body = r.json()
        assert body["data"] is None
        assert body["error"] in {"http_5xx", "circuit_open"}
        assert "sim" not in r.text
        assert "tb1" not in r.text
        r = await client.get("/api/v1/oracle/icy-btc-ratio")
        assert r.status_code == 503
        # Enough failures open the breaker; the class says so, the text never leaks.
        for _ in range(3):
            r = await client.get("/api/v1/oracle/treasury-btc")
        assert r.json()["error"] == "circuit_open"
