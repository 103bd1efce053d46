"""``GET /api/v1/swap/info``: exact formulas, partial data with warnings, 503 when everything fails."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.domain.fees import min_swap_sats, service_fee
from icy_backend.domain.oracle import OracleService
from icy_backend.domain.sandbox import seed_locked_treasuries
from icy_backend.domain.swap_info import fixed, min_icy_to_swap
from icy_backend.routes.swap_info import routes
from icy_backend.sim.faults import Fault
from tests.icy_backend.domain.support import (
    SimEnv,
    client_for,
    make_app,
    metric,
    sim_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def test_fixed_formatting() -> None:
    assert fixed(Fraction(1, 3), 2) == "0.33"
    assert fixed(Fraction(2, 3), 4) == "0.6667"
    assert fixed(Fraction(65000, 10**8), 6) == "0.000650"
    assert fixed(Fraction(12345), 2) == "12345.00"


def test_min_icy_to_swap_pays_more_than_dust() -> None:
    c, t = 101_000 * 10**18, 250_000_000
    rate, fee = Decimal("0.01"), 3000
    m = min_icy_to_swap(c, t, 0, rate, fee)
    sats = m * t // c  # what that much ICY is worth
    assert sats - service_fee(sats, rate, fee) >= 546
    assert min_icy_to_swap(c, t, 10**30, rate, fee) == 10**30
    s_min = min_swap_sats(rate, fee)
    assert m == math.ceil(Fraction(s_min * c, t))


@pytest.fixture
async def env(engine: AsyncEngine) -> AsyncIterator[SimEnv]:
    async with sim_env() as env:
        await seed_locked_treasuries(engine, [env.sims.locked_treasury])
        env.sims.service_knows_locked_treasury = True  # the service's table lists it
        yield env


async def _info(env: SimEnv, engine: AsyncEngine) -> Any:
    oracle = OracleService(env.settings, env.metrics, engine, env.clients)
    state = {
        "oracle": oracle,
        "engine": engine,
        "settings": env.settings,
        "clients": env.clients,
        "metrics": env.metrics,
    }
    async with client_for(make_app(routes, state)) as client:
        return await client.get("/api/v1/swap/info")


async def test_every_key_with_exact_formulas(env: SimEnv, engine: AsyncEngine) -> None:
    r = await _info(env, engine)
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == "info retrieved successfully"
    data = body["data"]
    c, t, p = env.sims.circulated_wei(), 250_000_000, Fraction(Decimal("65000.12"))
    assert data == {
        "circulated_icy_balance": str(c),
        "satoshi_balance": str(t),
        "satoshi_per_usd": math.floor(Fraction(10**8) / p * 100) / 100,
        "satoshi_usd_rate": "0.000650",
        "icy_satoshi_rate": fixed(Fraction(t * 10**18, c), 2),
        "icy_usd_rate": fixed(Fraction(t * 10**18, c) * p / 10**8, 4),
        "min_icy_to_swap": str(max(2 * 10**18, math.ceil(Fraction(min_swap_sats(Decimal("0.01"), 3000) * c, t)))),
        "service_fee_rate": 0.01,
        "min_satoshi_fee": "3000",
    }
    assert data["satoshi_per_usd"] == 1538.45  # 1538.4587... floored
    ok = {"operation_type": "swap_info", "category": "swap", "status": "success"}
    assert metric(env.metrics, "icy_backend_business_operations_total", ok) == 1


@pytest.mark.parametrize(
    ("sim", "missing", "warning"),
    [
        ("prices", {"satoshi_per_usd", "satoshi_usd_rate", "icy_usd_rate"}, "BTC price"),
        ("esplora", {"satoshi_balance", "icy_satoshi_rate", "icy_usd_rate", "min_icy_to_swap"}, "treasury BTC"),
        (
            "evm",
            {"circulated_icy_balance", "icy_satoshi_rate", "icy_usd_rate", "min_icy_to_swap"},
            "circulated ICY",
        ),
    ],
)
async def test_one_source_failing_gives_partial_data(
    env: SimEnv, engine: AsyncEngine, sim: str, missing: set[str], warning: str
) -> None:
    getattr(env.sims, sim).faults.set(Fault(path="*", status=500))
    r = await _info(env, engine)
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["partial_data"] is True
    assert any(warning in w for w in data["warnings"])
    assert not missing & set(data)
    assert data["service_fee_rate"] == 0.01
    assert data["min_satoshi_fee"] == "3000"
    assert "http://" not in r.text


async def test_mochi_failure_is_a_warning_not_a_failure(env: SimEnv, engine: AsyncEngine) -> None:
    env.sims.mochi.faults.set(Fault(path="*", status=500))
    data = (await _info(env, engine)).json()["data"]
    assert data["partial_data"] is True
    assert data["circulated_icy_balance"] == str(env.sims.circulated_wei() - env.sims.mochi.value_wei)
    assert "icy_satoshi_rate" in data


async def test_all_sources_failing_is_503(env: SimEnv, engine: AsyncEngine) -> None:
    for sim in (env.sims.prices, env.sims.esplora, env.sims.evm):
        sim.faults.set(Fault(path="*", status=500))
    r = await _info(env, engine)
    assert r.status_code == 503
    assert r.json()["error"] == "upstream_unavailable"
    err = {"operation_type": "swap_info", "category": "swap", "status": "error"}
    assert metric(env.metrics, "icy_backend_business_operations_total", err) == 1


async def test_zero_circulating_icy_does_not_crash(env: SimEnv, engine: AsyncEngine) -> None:
    # Lock every holder (and Mochi Pay reports 0): circulating ICY is 0 (fix: division by zero -> 500).
    sims = env.sims
    await seed_locked_treasuries(engine, [*sims.holders, sims.signer_address])
    sims.mochi.set_value(0)
    r = await _info(env, engine)
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["circulated_icy_balance"] == "0"
    assert "icy_satoshi_rate" not in data
    assert "icy_usd_rate" not in data
    assert data["partial_data"] is True
    assert any("circulating ICY is 0" in w for w in data["warnings"])


async def test_zero_treasury_omits_min_swap(env: SimEnv, engine: AsyncEngine) -> None:
    from icy_backend.sim.btc_wallet import P2wpkhKey

    env.settings.BLOCKCHAIN_BTC_TREASURY_ADDRESS = P2wpkhKey.from_seed(b"empty", "test").address
    data = (await _info(env, engine)).json()["data"]
    assert data["satoshi_balance"] == "0"
    assert data["icy_satoshi_rate"] == "0.00"
    assert "min_icy_to_swap" not in data
    assert any("treasury BTC is 0" in w for w in data["warnings"])
