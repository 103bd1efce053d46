"""``scripts/sandbox-anvil.sh``: the chain it prepares lets a user swap, and the service settings it writes point
every EVM setting at anvil and are accepted by the service."""

from __future__ import annotations

from eth_account import Account

from icy_backend.settings import Settings
from icy_backend.sim import anvil, anvil_sandbox
from icy_backend.sim.combined import DEMO_SIGNER_KEY, Simulators
from tests.evm_real.conftest import Chain


def test_prepared_chain_and_service_settings(chain: Chain, artifacts: dict[str, anvil.Artifact]) -> None:
    stack = anvil_sandbox.prepare_chain(chain.node, artifacts)
    signer = Account.from_key(DEMO_SIGNER_KEY).address
    assert stack.signer == signer
    allowance = anvil.calldata("allowance(address,address)", ["address", "address"], [signer, stack.swap])
    answer = chain.rpc.call("eth_call", {"to": stack.icy, "data": "0x" + allowance.hex()}, "latest")
    assert int(answer, 16) == 2**256 - 1  # swap requests can be pulled from the signer wallet

    sims = Simulators(replicas=2)
    sims.seed_demo()
    env = anvil_sandbox.service_env(
        sims.env_lines("http://127.0.0.1:1"), chain.node, stack, DATABASE_URL="sqlite+aiosqlite:///x.sqlite3"
    )
    assert not [k for k in env if k.startswith("DEMO_")]
    assert not [v for v in env.values() if v.endswith(("/evm", "/evm2"))]
    assert "BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH" not in env
    settings = Settings.model_validate(env)
    assert settings.base_rpc_endpoints == [chain.node.url]
    assert (settings.BLOCKCHAIN_ICY_CONTRACT_ADDR, settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR) == (
        stack.icy,
        stack.swap,
    )
    assert settings.chain_id == 84532
    assert not settings.sandbox_enabled
