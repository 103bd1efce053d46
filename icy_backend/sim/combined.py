"""The four simulators on one app (``/esplora``, ``/evm``, ``/coingecko``, ``/mochi``), demo data, ticker."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial

import anyio
from anyio.abc import TaskStatus
from eth_account import Account
from eth_utils.crypto import keccak

from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.evm import EvmSim
from icy_backend.sim.evm_chain import sim_address
from icy_backend.sim.faults import ASGIApp, Receive, Scope, Send, send_json
from icy_backend.sim.mochi import MochiSim
from icy_backend.sim.prices import PriceSim

ICY = 10**18
BTC_NETWORKS = {"testnet": "test", "mainnet": "main", "signet": "signet", "regtest": "regtest"}
# Fixed, publicly known test keys: never use them for real funds.
DEMO_SIGNER_KEY = "0x" + keccak(text="icy-backend demo swap signer").hex()
DEMO_BTC_SEED = b"icy-backend demo btc wallet"
DEMO_TREASURY_UTXOS = 5
DEMO_TREASURY_UTXO_SATS = 50_000_000  # 5 x 0.5 BTC
DEMO_LOCKED_ICY = 900_000 * ICY
DEMO_HOLDER_ICY = 20_000 * ICY
DEMO_SIGNER_ICY = 1_000 * ICY
DEMO_HOLDERS = 5


class PrefixRouter:
    """Pure-ASGI prefix dispatch. Unlike Starlette's Mount, ``POST /evm`` (no trailing slash) reaches the
    JSON-RPC app directly instead of being redirected, as RPC clients post to the bare endpoint URL."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        root = scope.get("root_path", "")
        path: str = scope["path"]
        relative = path[len(root) :] if root and path.startswith(root) else path
        for prefix, app in self.apps.items():
            if relative == prefix or relative.startswith(prefix + "/"):
                child = dict(scope, root_path=root + prefix)
                if relative == prefix:
                    child["path"] = path + "/"
                    child["raw_path"] = child["path"].encode()
                await app(child, receive, send)
                return
        if scope["type"] == "http":
            await send_json(send, 404, {"error": "not found", "prefixes": list(self.apps)})


class Simulators:
    """The four simulators and their combined app; ``seed_demo()`` adds deterministic demo state."""

    def __init__(
        self,
        *,
        btc_network: str = "testnet",
        chain_id: int = 84532,
        seed: int = 42,
        replicas: int = 1,
        service_knows_locked_treasury: bool = False,
    ) -> None:
        if replicas not in (1, 2):
            raise ValueError("replicas must be 1 or 2")
        self.btc_network = btc_network
        self.btc_wallet = P2wpkhKey.from_seed(DEMO_BTC_SEED, BTC_NETWORKS[btc_network])
        self.signer_key = DEMO_SIGNER_KEY
        self.signer_address: str = Account.from_key(DEMO_SIGNER_KEY).address
        self.locked_treasury = sim_address("locked-treasury")
        self.holders = [sim_address(f"holder-{n}") for n in range(DEMO_HOLDERS)]
        self.btc_users = [P2wpkhKey.from_seed(b"demo user %d" % n, BTC_NETWORKS[btc_network]) for n in range(3)]
        self.esplora = EsploraSim(btc_network)
        self.evm = EvmSim(chain_id=chain_id, signer_address=self.signer_address)
        self.prices = PriceSim()
        self.mochi = MochiSim(chain_id="8453" if chain_id == 8453 else str(chain_id))
        # Whether the service using these simulators lists the demo locked treasury in ``icy_locked_treasuries``
        # (sandbox mode seeds it; a service configured from the env file of ``simulate`` cannot know it).
        self.service_knows_locked_treasury = service_knows_locked_treasury
        self.replicas = replicas
        self.evm2 = self.evm.view() if replicas == 2 else None
        self.esplora2 = self.esplora.lagging_view() if replicas == 2 else None
        self.initial_icy_tx = ""
        self.initial_swap_block = 0
        self.ticks = 0
        self._rng = random.Random(seed)
        mounts: dict[str, ASGIApp] = {
            "/esplora": self.esplora.app,
            "/evm": self.evm.app,
            "/coingecko": self.prices.app,
            "/mochi": self.mochi.app,
        }
        if self.evm2 is not None and self.esplora2 is not None:
            # Second nodes of the same chains that lag on ``PUT /evm2/_sim/lag`` / ``PUT /esplora2/_sim/lag``.
            mounts["/esplora2"] = self.esplora2.app
            mounts["/evm2"] = self.evm2.app
        self.app = PrefixRouter(mounts)

    def seed_demo(self) -> None:
        """Fund the BTC treasury, mint ICY to holders, locked treasury and signer, mine a few blocks."""
        for _ in range(DEMO_TREASURY_UTXOS):
            self.esplora.fund(self.btc_wallet.address, DEMO_TREASURY_UTXO_SATS)
        self.initial_icy_tx = self.evm.mint(self.locked_treasury, DEMO_LOCKED_ICY)
        for holder in self.holders:
            self.evm.mint(holder, DEMO_HOLDER_ICY)
        self.evm.mint(self.signer_address, DEMO_SIGNER_ICY)
        self.initial_swap_block = self.evm.mine_block()
        self.evm.mine_empty(5)

    def treasury_sats(self) -> int:
        """Treasury BTC per SPEC §9: confirmed funded - confirmed spent - mempool spent."""
        stats = self.esplora.address_json(self.btc_wallet.address)
        chain, mempool = stats["chain_stats"], stats["mempool_stats"]
        return int(chain["funded_txo_sum"] - chain["spent_txo_sum"] - mempool["spent_txo_sum"])

    def circulated_wei(self) -> int:
        """Circulating ICY as the service using these simulators computes it (SPEC §9 oracle): total supply
        minus the locked treasuries *it knows*, plus Mochi Pay."""
        locked = self.evm.balance_of(self.locked_treasury) if self.service_knows_locked_treasury else 0
        return self.evm.total_supply - locked + self.mochi.value_wei

    def demo_btc_amount(self, icy_amount: int) -> int | None:
        """The sats a demo swap of ``icy_amount`` gets: its value at the service's ratio (SPEC §9: ratio
        R = circ x 10^16 // (sats x 10^18), value = icy // (R x 100)), so it is never a price outlier."""
        circulated, treasury = self.circulated_wei(), self.treasury_sats()
        if circulated <= 0 or treasury <= 0:
            return None
        ratio = circulated * 10**16 // (treasury * 10**18)
        return icy_amount // (ratio * 100) if ratio > 0 else None

    def tick(self, *, mine_btc: bool = True) -> None:
        """One ticker step: a few ICY transfers, sometimes a swap, then a block on each chain (Bitcoin only
        with ``mine_btc``)."""
        rng = self._rng
        self.ticks += 1
        for _ in range(rng.randint(0, 2)):
            frm, to = rng.sample(self.holders, 2)
            amount = min(rng.randint(1, 100) * ICY, self.evm.balance_of(frm))
            if amount:
                self.evm.transfer(frm, to, amount)
        if self.ticks % 4 == 0 or rng.random() < 0.1:
            frm = rng.choice(self.holders)
            icy_amount = rng.randint(10, 100) * ICY
            btc_amount = self.demo_btc_amount(icy_amount)
            if btc_amount and self.evm.balance_of(frm) >= icy_amount:
                self.evm.emit_swap(icy_amount, rng.choice(self.btc_users).address, btc_amount, frm)
        self.evm.mine_block()
        if mine_btc:
            self.esplora.mine()

    async def run_ticker(
        self,
        block_time: float,
        btc_block_time: float | None = None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``tick()`` every ``block_time`` seconds until cancelled; 0 never ticks.

        ``btc_block_time`` (default: ``block_time``) mines Bitcoin blocks on their own clock instead, 0 never: tests
        then decide when blocks are mined (``POST /esplora/_sim/mine``)."""
        task_status.started()
        if btc_block_time is None or btc_block_time == block_time:
            if block_time <= 0:
                await anyio.sleep_forever()
            while True:
                await anyio.sleep(block_time)
                self.tick()
        async with anyio.create_task_group() as tg:
            if block_time > 0:
                tg.start_soon(self._every, block_time, partial(self.tick, mine_btc=False))
            if btc_block_time > 0:
                tg.start_soon(self._every, btc_block_time, self.esplora.mine)
            await anyio.sleep_forever()

    @staticmethod
    async def _every(seconds: float, step: Callable[[], object]) -> None:
        while True:
            await anyio.sleep(seconds)
            step()

    def env_lines(self, base_url: str) -> dict[str, str]:
        """The settings a service needs to use these simulators at ``base_url`` (no trailing slash)."""
        base = base_url.rstrip("/")
        replicas: dict[str, str] = {}
        if self.evm2 is not None:  # both URLs, primary first
            replicas["BTC_BLOCKSTREAM_API_URLS"] = f"{base}/esplora,{base}/esplora2"
            replicas["BLOCKCHAIN_BASE_RPC_ENDPOINTS"] = f"{base}/evm,{base}/evm2"
        return {
            **replicas,
            "BTC_BLOCKSTREAM_API_URL": f"{base}/esplora",
            "BLOCKCHAIN_BASE_RPC_ENDPOINT": f"{base}/evm",
            "COINGECKO_API_URL": f"{base}/coingecko",
            "MOCHI_PAY_API_URL": f"{base}/mochi",
            "BLOCKCHAIN_ICY_CONTRACT_ADDR": self.evm.icy_address,
            "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR": self.evm.swap_address,
            "BLOCKCHAIN_BTC_TREASURY_ADDRESS": self.btc_wallet.address,
            "BTC_NETWORK": self.btc_network,
            "BLOCKCHAIN_CHAIN_ID": str(self.evm.chain_id),
            "BTC_WALLET_WIF": self.btc_wallet.wif,
            "BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY": self.signer_key,
            "BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER": str(self.initial_swap_block),
            "BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH": self.initial_icy_tx,
            "DEMO_LOCKED_TREASURY_ADDRESS": self.locked_treasury,
        }
