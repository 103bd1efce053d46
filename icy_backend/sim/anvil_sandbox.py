"""The sandbox against a real EVM: anvil with the project's contracts instead of the in-process EVM simulator.

``scripts/sandbox-anvil.sh`` (``python -m icy_backend.sim.anvil_sandbox``) starts anvil (chain 84532, a block every
``--block-time`` seconds), deploys IcyToken, IcyBtcSwap (signer = the demo signer key) and SwapBatcher, mints demo
ICY, starts ``icy-backend simulate`` for Esplora, prices and Mochi Pay, and runs ``icy-backend serve`` against all of
it (SQLite, ``APP_ENV=local``, ``SANDBOX=off``). Ctrl-C stops everything.

``python -m icy_backend.sim.anvil_sandbox swap --icy 100 --btc-address tb1…`` then plays a user: it asks the running
service for a signature (at the fair price unless ``--sats`` is given), approves and calls ``swap(...)`` from anvil's
dev account 1; the service indexes the Swap and pays the BTC on the simulator.

Every key here is a publicly known test key; nothing touches a real chain.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account

from icy_backend.sim import anvil
from icy_backend.sim.combined import DEMO_SIGNER_KEY

CHAIN_ID = 84532
ICY = 10**18
USER_INDEX = 1  # anvil dev account 1 plays the user
USER_ICY = 100_000 * ICY
SIGNER_ICY = 1_000 * ICY
STATE_FILE = anvil.REPO / ".tools" / "sandbox-anvil.json"


def _wait_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} not written within {timeout} s")
        time.sleep(0.05)


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def prepare_chain(node: anvil.AnvilNode, artifacts: dict[str, anvil.Artifact]) -> anvil.SwapStack:
    """Deploy the contracts, mint demo ICY to the user and the signer wallet, and give the signer ETH and the
    standing allowance the swap contract needs to pull the ICY of swap requests (operator set-up)."""
    rpc = node.rpc
    deployer = anvil.Wallet(rpc, anvil.dev_key(0), CHAIN_ID)
    signer = anvil.Wallet(rpc, DEMO_SIGNER_KEY, CHAIN_ID)
    rpc.call("anvil_setBalance", signer.address, hex(10 * ICY))
    stack = anvil.deploy_swap_stack(deployer, artifacts, signer.address)
    user = anvil.Wallet(rpc, anvil.dev_key(USER_INDEX), CHAIN_ID)
    anvil.mint(deployer, stack.icy, user.address, USER_ICY)
    anvil.mint(deployer, stack.icy, signer.address, SIGNER_ICY)
    anvil.approve(signer, stack.icy, stack.swap)
    return stack


def service_env(sim_env: dict[str, str], node: anvil.AnvilNode, stack: anvil.SwapStack, **extra: str) -> dict[str, str]:
    """The simulators' settings with the EVM side replaced by anvil and the deployed contracts."""
    env = {k: v for k, v in sim_env.items() if not k.startswith("DEMO_")}
    env.pop("BLOCKCHAIN_BASE_RPC_ENDPOINTS", None)
    env.pop("BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH", None)  # a hash of the simulated chain, not of anvil
    env.update(
        {
            "BLOCKCHAIN_BASE_RPC_ENDPOINT": node.url,
            "BLOCKCHAIN_CHAIN_ID": str(CHAIN_ID),
            "BLOCKCHAIN_ICY_CONTRACT_ADDR": stack.icy,
            "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR": stack.swap,
            "BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY": DEMO_SIGNER_KEY,
            "BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER": str(stack.block),
            "BLOCKCHAIN_CONFIRMATIONS": "1",
            "APP_ENV": "local",
            "SANDBOX": "off",
            "INDEX_INTERVAL": "10",
            "JOB_FIRST_RUN_DELAY": "2",
            **extra,
        }
    )
    return env


class _Terminated(Exception):
    """SIGTERM/SIGHUP: unwind so that every child (anvil, simulators, service) is stopped."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated(signum)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    missing = anvil.missing_tools()
    if missing:
        print(f"sandbox-anvil: missing {', '.join(missing)}: run scripts/install-evm-tools.sh", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="icy-sandbox-anvil-"))
    artifacts = anvil.compile_contracts()
    lifetime = 12 * 3600.0
    with anvil.run_anvil(
        chain_id=CHAIN_ID,
        port=args.anvil_port,
        block_time=args.block_time,
        lifetime=lifetime,
        log_path=workdir / "anvil.log",
    ) as node:
        stack = prepare_chain(node, artifacts)
        sim_port = anvil.free_port()
        sim_env_path = workdir / "sim.env"
        base = [sys.executable, "-m", "icy_backend.cli"]
        with (workdir / "simulate.log").open("wb") as sim_log:
            sim = subprocess.Popen(  # noqa: S603 - our own CLI
                [*base, "simulate", "--port", str(sim_port), "--env-file", str(sim_env_path)],
                cwd=anvil.REPO,
                stdout=sim_log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_file(sim_env_path, sim)
            env = service_env(
                _read_env(sim_env_path),
                node,
                stack,
                HOST="127.0.0.1",
                PORT=str(args.port),
                DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/service.sqlite3",
            )
            service_url = f"http://127.0.0.1:{args.port}"
            STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATE_FILE.write_text(
                json.dumps({"service": service_url, "anvil": node.url, "icy": stack.icy, "swap": stack.swap}) + "\n"
            )
            user = Account.from_key(anvil.dev_key(USER_INDEX)).address
            print(
                "\nSANDBOX AGAINST ANVIL (test keys only, nothing touches a real chain)\n"
                f"  service      {service_url}  (logs below; data and logs in {workdir})\n"
                f"  anvil        {node.url}  chain {CHAIN_ID}, a block every {args.block_time:g} s\n"
                f"  IcyToken     {stack.icy}\n  IcyBtcSwap   {stack.swap}\n  SwapBatcher  {stack.batcher}\n"
                f"  user         {user} (anvil dev account {USER_INDEX}, {USER_ICY // ICY} ICY)\n"
                f"  simulators   http://127.0.0.1:{sim_port}  (/esplora/_sim/payments lists BTC paid)\n"
                "  try:  .venv/bin/python -m icy_backend.sim.anvil_sandbox swap --icy 100 --btc-address <tb1…>\n",
                flush=True,
            )
            child_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), **env}
            service = subprocess.Popen([*base, "serve"], cwd=anvil.REPO, env=child_env)  # noqa: S603
            try:
                return service.wait()
            except (KeyboardInterrupt, _Terminated):
                return 0
            finally:
                _stop(service)
        finally:
            _stop(sim)
            STATE_FILE.unlink(missing_ok=True)


def swap(args: argparse.Namespace) -> int:
    """Play the user: signature from the service, approve, swap on anvil; prints the receipt's outcome."""
    state: dict[str, Any] = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
    service = args.service or state.get("service")
    node_url = args.anvil or state.get("anvil")
    if not service or not node_url or not state.get("swap"):
        print("swap: no running sandbox-anvil found (start scripts/sandbox-anvil.sh first)", file=sys.stderr)
        return 2
    icy = int(Decimal(args.icy) * ICY)
    with httpx.Client(timeout=30, trust_env=False) as http:
        sats = args.sats
        if sats is None:
            ratio = int(http.get(f"{service}/api/v1/oracle/icy-btc-ratio").json()["data"]["value"])
            # 99 % of the displayed value: pricing nets out payouts still owed, so it can be a little lower.
            sats = icy // (ratio * 100) * 99 // 100
        answer = http.post(
            f"{service}/api/v1/swap/generate-signature",
            json={"icy_amount": str(icy), "btc_address": args.btc_address, "btc_amount": str(sats)},
        )
        body = answer.json()
        if answer.status_code != 200:
            print(f"swap: the service refused to sign ({answer.status_code}): {body.get('message')}", file=sys.stderr)
            return 1
        data = body["data"]
    rpc = anvil.JsonRpc(node_url)
    try:
        user = anvil.Wallet(rpc, anvil.dev_key(USER_INDEX), CHAIN_ID)
        anvil.approve(user, state["icy"], state["swap"], icy)
        call = anvil.swap_call(
            icy, args.btc_address, sats, int(data["nonce"]), int(data["deadline"]), bytes.fromhex(data["signature"])
        )
        receipt = user.send(state["swap"], call, gas=400_000)
    finally:
        rpc.close()
    ok = int(receipt["status"], 16) == 1
    print(
        f"swap {'mined' if ok else 'REVERTED'}: tx {receipt['transactionHash']} block {int(receipt['blockNumber'], 16)}"
    )
    print(f"  {args.icy} ICY for {sats} sats to {args.btc_address}; the service pays after indexing it")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox-anvil", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    run_p = sub.add_parser("run", help="start anvil, the simulators and the service (the default)")
    for p in (parser, run_p):
        p.add_argument("--port", type=int, default=8080, help="service port on 127.0.0.1 (default: %(default)s)")
        p.add_argument("--anvil-port", type=int, default=8545, help="anvil port (default: %(default)s)")
        p.add_argument("--block-time", type=float, default=2.0, help="anvil seconds per block (default: %(default)s)")
    swap_p = sub.add_parser("swap", help="swap ICY for BTC as anvil's dev account 1 against the running sandbox")
    swap_p.add_argument("--icy", required=True, help="ICY to swap, in tokens (decimals allowed)")
    swap_p.add_argument("--btc-address", required=True, help="testnet address to receive the BTC")
    swap_p.add_argument("--sats", type=int, default=None, help="BTC amount in sats (default: 99 %% of the fair price)")
    swap_p.add_argument("--service", default=None, help="service URL (default: the running sandbox's)")
    swap_p.add_argument("--anvil", default=None, help="anvil URL (default: the running sandbox's)")
    args = parser.parse_args(argv)
    if args.command == "swap":
        return swap(args)
    try:
        return run(args)
    except (KeyboardInterrupt, _Terminated):
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
