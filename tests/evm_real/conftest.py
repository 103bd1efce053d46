"""A real EVM for the tests (SPEC §11): the project's Solidity contracts compiled by npm ``solc`` and deployed on
anvil, the service's EVM client pointed at it; Esplora, prices and PostgreSQL as in the money tests.

One anvil per session (killed at teardown, and by ``timeout`` after 30 min whatever happens); the contracts are
compiled and deployed once, and every test runs from an ``evm_snapshot`` taken after deployment, reverted after it.
Without the tools (``scripts/install-evm-tools.sh``) these tests skip — except under CI=true/1/yes, where they fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from eth_account import Account
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.breakers import Breakers
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.clients.factory import Clients
from icy_backend.clients.webhook import WebhookClient
from icy_backend.domain.oracle import OracleService
from icy_backend.domain.wallet import wallet_from_wif
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.settings import Settings
from icy_backend.sim import anvil
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.prices import PriceSim
from tests import pg
from tests.ci import skip_or_fail
from tests.icy_backend.money.conftest import SIGNER_KEY, WIF, BtcWorld, api_client, make_settings

CHAIN_ID = 84532
ICY = 10**18
# 1 000 000 ICY circulate (all minted to the user) against 1 BTC in the treasury:
# ratio = 10^24 × 10^16 / (10^8 × 10^18) = 10^14, so 1 ICY is worth 100 sats.
USER_ICY = 1_000_000 * ICY
TREASURY_SATS = 100_000_000
RATIO = 10**14
SIGNER_ADDRESS = str(Account.from_key(SIGNER_KEY).address)


def require_tools() -> None:
    """Skip without solc/anvil/node — but fail under CI (tests.ci)."""
    missing = anvil.missing_tools()
    if missing:
        skip_or_fail(f"real-EVM tools missing ({', '.join(missing)}): run scripts/install-evm-tools.sh")


@pytest.fixture(scope="session")
def artifacts() -> dict[str, anvil.Artifact]:
    """The compiled contracts (solcjs standard JSON), once per session."""
    require_tools()
    return anvil.compile_contracts()


@dataclass
class Chain:
    """The session's anvil node, the deployed contracts and the test wallets."""

    node: anvil.AnvilNode
    stack: anvil.SwapStack
    deployer: anvil.Wallet
    user: anvil.Wallet  # holds every ICY and has approved the swap contract and the batcher
    signer: anvil.Wallet  # the service's signer wallet (has ETH for gas)
    base_snapshot: str

    @property
    def rpc(self) -> anvil.JsonRpc:
        return self.node.rpc

    def reset_nonces(self) -> None:
        for wallet in (self.deployer, self.user, self.signer):
            wallet.nonce = None

    def block_number(self) -> int:
        return int(self.rpc.call("eth_blockNumber"), 16)


@pytest.fixture(scope="session")
def session_chain(artifacts: dict[str, anvil.Artifact], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    log_path = tmp_path_factory.mktemp("anvil") / "anvil.log"
    with anvil.run_anvil(chain_id=CHAIN_ID, log_path=log_path) as node:
        deployer = anvil.Wallet(node.rpc, anvil.dev_key(0), CHAIN_ID)
        user = anvil.Wallet(node.rpc, anvil.dev_key(1), CHAIN_ID)
        signer = anvil.Wallet(node.rpc, SIGNER_KEY, CHAIN_ID)
        node.rpc.call("anvil_setBalance", signer.address, hex(10 * ICY))
        stack = anvil.deploy_swap_stack(deployer, artifacts, SIGNER_ADDRESS)
        anvil.mint(deployer, stack.icy, user.address, USER_ICY)
        anvil.approve(user, stack.icy, stack.swap)
        anvil.approve(user, stack.icy, stack.batcher)
        snapshot = str(node.rpc.call("evm_snapshot"))
        yield Chain(node, stack, deployer, user, signer, snapshot)


@pytest.fixture
def chain(session_chain: Chain) -> Iterator[Chain]:
    """The deployed chain, reverted to its post-deployment state after the test."""
    yield session_chain
    rpc = session_chain.rpc
    rpc.call("evm_setAutomine", True)
    assert rpc.call("evm_revert", session_chain.base_snapshot) is True
    session_chain.base_snapshot = str(rpc.call("evm_snapshot"))  # a snapshot is used up by its revert
    session_chain.reset_nonces()


@pytest.fixture(scope="session")
def evm_db_url() -> Iterator[str]:
    yield from pg.private_database("icy_evm_real")


@pytest.fixture
async def engine(evm_db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = await pg.emptied_engine(evm_db_url, pool_size=5, max_overflow=10)
    yield eng
    await eng.dispose()


@dataclass
class AnvilWorld:
    """The service's parts wired to anvil (EVM) and the in-process Esplora and price simulators."""

    chain: Chain
    btc: BtcWorld
    settings: Settings
    clients: Clients
    oracle: OracleService
    engine: AsyncEngine

    @property
    def metrics(self) -> Metrics:
        return self.btc.metrics

    def state(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "metrics": self.metrics,
            "engine": self.engine,
            "clients": self.clients,
            "oracle": self.oracle,
        }

    def api(self, routes: list[Any]) -> httpx.AsyncClient:
        return api_client(routes, self.state())


def anvil_settings(chain: Chain, treasury: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "BLOCKCHAIN_BASE_RPC_ENDPOINT": chain.node.url,
        "BLOCKCHAIN_BTC_TREASURY_ADDRESS": treasury,
        "BLOCKCHAIN_ICY_CONTRACT_ADDR": chain.stack.icy,
        "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR": chain.stack.swap,
        "BLOCKCHAIN_CHAIN_ID": CHAIN_ID,
        "BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER": chain.stack.block,
        "BLOCKCHAIN_CONFIRMATIONS": 1,  # the minimum (SPEC §2): indexing helpers mine one block first
        "BTC_MAX_TX_FEE_USD": Decimal("5"),
    }
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
async def anvil_world(chain: Chain, engine: AsyncEngine) -> AsyncIterator[AnvilWorld]:
    """Treasury = the payout wallet with 1 BTC; 1 000 000 ICY on anvil: ratio 10^14 (1 ICY = 100 sats)."""
    base = make_settings()
    metrics = Metrics(make_registry())
    btc = BtcWorld(EsploraSim("testnet"), PriceSim(60000.0), base, metrics, Breakers(base, metrics), [])
    treasury = wallet_from_wif(WIF, "testnet").address
    btc.fund(TREASURY_SATS)
    settings = anvil_settings(chain, treasury)
    btc.settings = settings
    # The service's own HTTP client against the real node: loopback, no proxies from the environment.
    evm_http = httpx.AsyncClient(trust_env=False)
    hook_http = httpx.AsyncClient(trust_env=False)
    btc.http.extend([evm_http, hook_http])
    clients = Clients(
        esplora=btc.esplora(),
        evm=EvmRpcClient(evm_http, [chain.node.url], btc.breakers, metrics, deadline=10.0),
        prices=btc.prices(),
        mochi=None,
        webhook=WebhookClient(hook_http, metrics),
    )
    oracle = OracleService(settings, metrics, engine, clients)
    yield AnvilWorld(chain, btc, settings, clients, oracle, engine)
    for http in btc.http:
        await http.aclose()
