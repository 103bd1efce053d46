"""Fixtures for the money tests: a private PostgreSQL database, simulators and real clients wired to them.

Others use the shared ``test`` database concurrently, so this package creates its own database
(``icy_money_<random>``) over an autocommit connection, migrates it once and drops it at the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from embit import ec
from embit.networks import NETWORKS
from embit.script import p2wpkh
from eth_account import Account
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from icy_backend.breakers import Breakers
from icy_backend.clients.esplora import EsploraClient
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.clients.factory import Clients
from icy_backend.clients.prices import PriceClient
from icy_backend.clients.webhook import WebhookClient
from icy_backend.db.tables import btc_payout_candidates, onchain_btc_processed_transactions
from icy_backend.domain.oracle import OracleService
from icy_backend.domain.wallet import wallet_from_wif
from icy_backend.http.responses import ApiError
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.settings import Settings
from icy_backend.sim.btc_rules import parse_tx
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.evm import EvmSim
from icy_backend.sim.prices import PriceSim
from tests import pg
from tests.btc_verify import payout_problems

WIF = ec.PrivateKey(hashlib.sha256(b"money tests payout wallet").digest()).wif(NETWORKS["test"])
SIGNER_KEY = "0x" + hashlib.sha256(b"money tests swap signer").hexdigest()


def recipient(n: int, network: str = "test") -> str:
    key = ec.PrivateKey(hashlib.sha256(b"recipient %d" % n).digest())
    return str(p2wpkh(key.get_public_key()).address(NETWORKS[network]))


@pytest.fixture(scope="session")
def money_db_url() -> Iterator[str]:
    yield from pg.private_database("icy_money_test")


@pytest.fixture
async def engine(money_db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = await pg.emptied_engine(money_db_url, pool_size=5, max_overflow=10)
    yield eng
    await eng.dispose()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "APP_ENV": "test",
        "BTC_NETWORK": "testnet",
        "BTC_WALLET_WIF": WIF,
        "BTC_MAX_TX_FEE_USD": Decimal("5"),
        "BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY": SIGNER_KEY,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class BtcWorld:
    """The Esplora and price simulators, clients wired to them, settings and metrics."""

    esplora_sim: EsploraSim
    price_sim: PriceSim
    settings: Settings
    metrics: Metrics
    breakers: Breakers
    http: list[httpx.AsyncClient]

    @property
    def wallet_address(self) -> str:
        return wallet_from_wif(WIF, "testnet").address

    def esplora(self, deadline: float = 1.0) -> EsploraClient:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.esplora_sim.app))
        self.http.append(http)
        return EsploraClient(http, ["http://esplora"], self.breakers, self.metrics, deadline=deadline)

    def prices(self) -> PriceClient:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.price_sim.app))
        self.http.append(http)
        return PriceClient(http, "http://coingecko", self.breakers, self.metrics, deadline=1.0)

    def fund(self, *values: int) -> None:
        for value in values:
            self.esplora_sim.fund(self.wallet_address, value)

    def paid_to(self, address: str) -> list[dict[str, Any]]:
        """Every output to ``address`` the simulated node ever accepted (any status)."""
        return [p for p in self.esplora_sim.payments() if p["address"] == address]

    def confirmed_to(self, address: str) -> list[dict[str, Any]]:
        """Payments to ``address`` confirmed on the final chain: "paid once" means exactly one of these."""
        return [p for p in self.paid_to(address) if p["status"] == "confirmed"]

    def mine(self, blocks: int = 1, min_fee_rate: float = 0.0) -> int:
        return self.esplora_sim.mine(blocks, min_fee_rate)


@pytest.fixture
async def world() -> AsyncIterator[BtcWorld]:
    settings = make_settings()
    metrics = Metrics(make_registry())
    w = BtcWorld(EsploraSim("testnet"), PriceSim(60000.0), settings, metrics, Breakers(settings, metrics), [])
    yield w
    for http in w.http:
        await http.aclose()


@pytest.fixture(autouse=True)
def _reverify_candidates_of_money_tests(request: pytest.FixtureRequest) -> None:
    """Every money test with a database and the Bitcoin simulator re-verifies its payout candidates at the end."""
    if {"engine", "world", "anyio_backend"} <= set(request.fixturenames):
        request.getfixturevalue("_candidates_reverified")


@pytest.fixture
async def _candidates_reverified(engine: AsyncEngine, world: BtcWorld) -> AsyncIterator[None]:
    """After the test: every candidate of every payout, judged by an independent library (bitcoinlib, not embit):
    signatures against the simulator's prevouts, RBF signal, fee = inputs − outputs = the stored fee, and one
    output paying the row's total to its address (issue 13)."""
    yield
    P, C = onchain_btc_processed_transactions, btc_payout_candidates
    query = select(C.c.txid, C.c.raw_tx, C.c.fee, P.c.btc_address, P.c.total).join(P, P.c.id == C.c.payout_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    problems: list[str] = []
    for txid, raw, fee, address, total in rows:
        prevouts = []
        for i in parse_tx(bytes.fromhex(raw)).vin:
            prev = world.esplora_sim.txs.get(i.prev_txid)
            if prev is None or i.vout >= len(prev.vout):
                problems.append(f"{txid}: spends an output the node never saw")
                break
            prevouts.append((prev.vout[i.vout].value, prev.vout[i.vout].script.hex()))
        else:
            problems += payout_problems(raw, prevouts, txid=txid, fee=int(fee), address=address, total=int(total))
    assert not problems, problems


async def add_payout(
    engine: AsyncEngine,
    n: int,
    address: str,
    total: int,
    *,
    service_fee: int = 3000,
    status: str = "pending",
    hold_reason: str | None = None,
) -> int:
    """Insert a payout row as the swap indexer would (pending, or held); returns its id."""
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(onchain_btc_processed_transactions).values(
                swap_transaction_hash="0x" + hashlib.sha256(b"swap %d" % n).hexdigest(),
                btc_address=address,
                subtotal=total + service_fee,
                service_fee=service_fee,
                total=total,
                status=status,
                hold_reason=hold_reason,
                attempts=0,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


async def payout_row(engine: AsyncEngine, row_id: int) -> dict[str, Any]:
    T = onchain_btc_processed_transactions
    async with engine.connect() as conn:
        row = (await conn.execute(select(T).where(T.c.id == row_id))).mappings().one()
    return dict(row)


async def payout_candidates(engine: AsyncEngine, row_id: int) -> list[dict[str, Any]]:
    """The payout's candidates, oldest first."""
    C = btc_payout_candidates
    async with engine.connect() as conn:
        rows = (await conn.execute(select(C).where(C.c.payout_id == row_id).order_by(C.c.id))).mappings().all()
    return [dict(r) for r in rows]


# ---------------------------------------------------------------- the full world: both chains, oracle, app

HOLDER = "0x" + "11" * 20
SIGNER_ADDRESS = Account.from_key(SIGNER_KEY).address


@dataclass
class SwapWorld:
    btc: BtcWorld
    evm_sim: EvmSim
    settings: Settings
    clients: Clients
    oracle: OracleService
    engine: AsyncEngine

    def state(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "metrics": self.btc.metrics,
            "engine": self.engine,
            "clients": self.clients,
            "oracle": self.oracle,
        }


@pytest.fixture
async def swap_world(world: BtcWorld, engine: AsyncEngine) -> SwapWorld:
    """Treasury = payout wallet funded with 1 BTC; 100 000 ICY circulating: ratio 10^13 (100 000 ICY/BTC)."""
    evm_sim = EvmSim(chain_id=84532, signer_address=SIGNER_ADDRESS)
    evm_sim.mint(HOLDER, 100_000 * 10**18)
    evm_sim.mine_block()
    world.fund(100_000_000)
    settings = make_settings(
        BLOCKCHAIN_BTC_TREASURY_ADDRESS=world.wallet_address,
        BLOCKCHAIN_ICY_CONTRACT_ADDR=evm_sim.icy_address,
        BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR=evm_sim.swap_address,
        BLOCKCHAIN_CHAIN_ID=84532,
    )
    world.settings = settings
    evm_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=evm_sim.app))
    hook_http = httpx.AsyncClient()
    world.http.extend([evm_http, hook_http])
    clients = Clients(
        esplora=world.esplora(),
        evm=EvmRpcClient(evm_http, ["http://evm"], world.breakers, world.metrics, deadline=1.0),
        prices=world.prices(),
        mochi=None,
        webhook=WebhookClient(hook_http, world.metrics),
    )
    oracle = OracleService(settings, world.metrics, engine, clients)
    return SwapWorld(world, evm_sim, settings, clients, oracle, engine)


class WithState:
    """Serve ``app`` with ``request.state`` filled from ``state`` (ASGITransport runs no lifespan)."""

    def __init__(self, app: Starlette, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


def api_client(routes: list[BaseRoute], state: dict[str, Any]) -> httpx.AsyncClient:
    app = WithState(Starlette(routes=routes, exception_handlers={ApiError: _api_error}), state)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
