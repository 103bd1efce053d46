"""A real EVM for tests and the anvil sandbox (SPEC §11 "Real EVM in tests").

The project's Solidity sources (``contracts/``) are compiled with npm ``solc`` (solcjs, standard JSON, run by
``node``) and deployed on anvil (npm ``@foundry-rs/anvil-linux-amd64``) with transactions signed here by
eth-account. Both tools are installed, pinned, into ``.tools/evm`` by ``scripts/install-evm-tools.sh``.

Everything here is synchronous and talks to 127.0.0.1 only; it is test and developer tooling, never used by
the service itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

REPO = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO / ".tools" / "evm"
ANVIL_BIN = TOOLS_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
SOLC_DIR = TOOLS_DIR / "node_modules" / "solc"
CONTRACTS_DIR = REPO / "contracts"
CONTRACT_SOURCES = ("IcyToken.sol", "IcyBtcSwap.sol", "SwapBatcher.sol")
# anvil's well-known development mnemonic: its accounts are funded with 10 000 ETH at genesis.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_LIFETIME = 1800.0  # an anvil started here is killed after this many seconds whatever happens
GWEI = 10**9


class ToolMissing(RuntimeError):
    """node, solcjs or anvil is not installed (run scripts/install-evm-tools.sh)."""


class RpcFailure(RuntimeError):
    """A JSON-RPC error object; ``data`` holds revert data when the node sent some."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('message')}")
        self.error = error
        self.data: str | None = error.get("data") if isinstance(error.get("data"), str) else None


def missing_tools() -> list[str]:
    """What is missing to compile and run the contracts (empty when everything is there)."""
    missing = []
    if not _which("node"):
        missing.append("node")
    if not (SOLC_DIR / "soljson.js").is_file():
        missing.append(f"solc (npm) in {SOLC_DIR}")
    if not os.access(ANVIL_BIN, os.X_OK):
        missing.append(f"anvil (npm) at {ANVIL_BIN}")
    return missing


def _which(name: str) -> bool:
    return shutil.which(name) is not None


# ---------------------------------------------------------------- compiling


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes


_COMPILE_JS = """
const solc = require(process.argv[1]);
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => { process.stdout.write(solc.compile(input)); });
"""


def compile_contracts(
    sources: Sequence[str] = CONTRACT_SOURCES, directory: Path = CONTRACTS_DIR
) -> dict[str, Artifact]:
    """Compile with solcjs' standard JSON interface; raises RuntimeError with the compiler's errors."""
    if missing_tools():
        raise ToolMissing(", ".join(missing_tools()))
    standard_input = {
        "language": "Solidity",
        "sources": {name: {"content": (directory / name).read_text()} for name in sources},
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "evmVersion": "cancun",
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }
    node = shutil.which("node") or "node"
    done = subprocess.run(  # noqa: S603 - our own node script and paths, no user input
        [node, "-e", _COMPILE_JS, str(SOLC_DIR)],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"solcjs failed: {done.stderr[-2000:]}")
    output = json.loads(done.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solc: " + "\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    artifacts: dict[str, Artifact] = {}
    for contracts in output["contracts"].values():
        for name, data in contracts.items():
            code = data["evm"]["bytecode"]["object"]
            if code:  # interfaces have no bytecode
                artifacts[name] = Artifact(name, data["abi"], bytes.fromhex(code))
    return artifacts


# ---------------------------------------------------------------- JSON-RPC


class JsonRpc:
    """A small synchronous JSON-RPC client (single calls and batches) for a loopback node."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.http = httpx.Client(timeout=timeout)
        self._id = 0

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, *params: Any) -> Any:
        self._id += 1
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}
        answer = self.http.post(self.url, json=body)
        answer.raise_for_status()
        data = answer.json()
        if data.get("error") is not None:
            raise RpcFailure(method, data["error"])
        return data["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results in call order; an error object is returned as an :class:`RpcFailure` (not raised)."""
        if not calls:
            return []
        first = self._id + 1
        self._id += len(calls)
        body = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)} for i, (m, p) in enumerate(calls)]
        answer = self.http.post(self.url, json=body)
        answer.raise_for_status()
        by_id = {item["id"]: item for item in answer.json()}
        results: list[Any] = []
        for i, (method, _) in enumerate(calls):
            item = by_id[first + i]
            results.append(RpcFailure(method, item["error"]) if item.get("error") is not None else item["result"])
        return results


# ---------------------------------------------------------------- anvil


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_key(index: int) -> str:
    """The private key of anvil's development account ``index`` (derived from its public mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(account.key).hex()


@dataclass
class AnvilNode:
    process: subprocess.Popen[bytes]
    url: str
    chain_id: int
    rpc: JsonRpc


@contextmanager
def run_anvil(
    *,
    chain_id: int = 84532,
    port: int | None = None,
    block_time: float | None = None,
    lifetime: float = DEFAULT_LIFETIME,
    log_path: Path | None = None,
) -> Iterator[AnvilNode]:
    """Start anvil on 127.0.0.1, wait until it answers, and kill it at the end.

    Without ``port`` anvil binds port 0 and the port it got is read from its "Listening on" line, so there is no
    window in which another process could take a pre-picked port (and answer in anvil's place). ``lifetime``
    bounds it even if this process dies without cleaning up (``timeout -s KILL``).
    """
    if missing_tools():
        raise ToolMissing(", ".join(missing_tools()))
    cmd = [shutil.which("timeout") or "timeout", "-s", "KILL", str(int(lifetime)), str(ANVIL_BIN)]
    cmd += ["--host", "127.0.0.1", "--port", str(port or 0), "--chain-id", str(chain_id)]
    cmd += ["--accounts", "10", "--mnemonic", DEV_MNEMONIC]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anvil-"))) / "anvil.log"
        out = stack.enter_context(log_path.open("wb"))
        # Our own binary and arguments; a session of its own so teardown kills ``timeout`` and anvil together.
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        stack.callback(_stop, process)
        bound = _listening_port(process, log_path)
        if port and bound != port:
            raise RuntimeError(f"anvil listens on {bound}, not {port}")
        url = f"http://127.0.0.1:{bound}"
        rpc = JsonRpc(url)
        stack.callback(rpc.close)
        served = int(rpc.call("eth_chainId"), 16)
        if served != chain_id:
            raise RuntimeError(f"anvil serves chain {served}, not {chain_id}")
        yield AnvilNode(process, url, chain_id, rpc)


_LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")


def _listening_port(process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        found = _LISTENING.search(log_path.read_bytes())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            tail = log_path.read_bytes()[-500:].decode(errors="replace")
            raise RuntimeError(f"anvil exited early with code {process.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"anvil did not start listening within {timeout} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


# ---------------------------------------------------------------- transactions


@dataclass
class Wallet:
    """A key that sends EIP-1559 transactions; nonces are counted locally after the first read."""

    rpc: JsonRpc
    key: str
    chain_id: int
    nonce: int | None = None
    address: str = field(init=False)

    def __post_init__(self) -> None:
        self.address = str(Account.from_key(self.key).address)

    def sign(self, to: str | None, data: bytes, *, gas: int = 3_000_000, value: int = 0) -> tuple[str, str]:
        """``(raw_hex, tx_hash)`` of the next transaction (max fee 100 gwei, tip 1 gwei; plenty on anvil)."""
        if self.nonce is None:
            self.nonce = int(self.rpc.call("eth_getTransactionCount", self.address, "pending"), 16)
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "value": value,
            "data": data,
            "gas": gas,
            "maxFeePerGas": 100 * GWEI,
            "maxPriorityFeePerGas": GWEI,
        }
        if to is not None:
            tx["to"] = to_checksum_address(to)
        signed = Account.sign_transaction(tx, self.key)
        self.nonce += 1
        return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()

    def send(self, to: str | None, data: bytes, *, gas: int = 3_000_000, value: int = 0) -> dict[str, Any]:
        """Send and return the receipt (anvil automines; waits up to 30 s for a block otherwise)."""
        raw, tx_hash = self.sign(to, data, gas=gas, value=value)
        self.rpc.call("eth_sendRawTransaction", raw)
        return wait_receipt(self.rpc, tx_hash)


def wait_receipt(rpc: JsonRpc, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        receipt = rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            return dict(receipt)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no receipt for {tx_hash} within {timeout} s")
        time.sleep(0.05)


def calldata(signature: str, types: Sequence[str], args: Sequence[Any]) -> bytes:
    """``selector(signature) ‖ abi.encode(types, args)``."""
    return bytes(keccak(text=signature)[:4]) + abi_encode(list(types), list(args))


# ---------------------------------------------------------------- the swap stack


@dataclass(frozen=True)
class SwapStack:
    """Addresses (checksummed) of the deployed contracts and the block the last one was deployed in."""

    icy: str
    swap: str
    batcher: str
    block: int
    signer: str


def deploy(wallet: Wallet, artifact: Artifact, types: Sequence[str] = (), args: Sequence[Any] = ()) -> tuple[str, int]:
    """Deploy ``artifact`` with constructor ``args``; returns ``(address, block_number)``."""
    receipt = wallet.send(None, artifact.bytecode + abi_encode(list(types), list(args)), gas=5_000_000)
    if int(receipt["status"], 16) != 1 or not receipt.get("contractAddress"):
        raise RuntimeError(f"deploying {artifact.name} failed")
    return str(to_checksum_address(receipt["contractAddress"])), int(receipt["blockNumber"], 16)


def deploy_swap_stack(wallet: Wallet, artifacts: dict[str, Artifact], signer: str) -> SwapStack:
    """IcyToken (``wallet`` mints), IcyBtcSwap(token, signer) and SwapBatcher(swap, token)."""
    icy, _ = deploy(wallet, artifacts["IcyToken"])
    swap, _ = deploy(wallet, artifacts["IcyBtcSwap"], ["address", "address"], [icy, signer])
    batcher, block = deploy(wallet, artifacts["SwapBatcher"], ["address", "address"], [swap, icy])
    return SwapStack(icy, swap, batcher, block, str(to_checksum_address(signer)))


def mint(wallet: Wallet, token: str, to: str, amount: int) -> None:
    receipt = wallet.send(token, calldata("mint(address,uint256)", ["address", "uint256"], [to, amount]))
    if int(receipt["status"], 16) != 1:
        raise RuntimeError("mint failed")


def approve(wallet: Wallet, token: str, spender: str, amount: int = 2**256 - 1) -> None:
    receipt = wallet.send(token, calldata("approve(address,uint256)", ["address", "uint256"], [spender, amount]))
    if int(receipt["status"], 16) != 1:
        raise RuntimeError("approve failed")


SWAP_SIGNATURE = "swap(uint256,string,uint256,uint256,uint256,bytes)"
SWAP_TYPES = ("uint256", "string", "uint256", "uint256", "uint256", "bytes")


def swap_call(icy: int, btc_address: str, sats: int, nonce: int, deadline: int, signature: bytes) -> bytes:
    return calldata(SWAP_SIGNATURE, SWAP_TYPES, [icy, btc_address, sats, nonce, deadline, signature])


def batch_call(calls: Sequence[tuple[int, str, int, int, int, bytes]]) -> bytes:
    """``SwapBatcher.swapAll(SwapCall[])`` calldata."""
    tuple_type = "(uint256,string,uint256,uint256,uint256,bytes)"
    return calldata(f"swapAll({tuple_type}[])", [f"{tuple_type}[]"], [list(calls)])


def error_selector(name: str) -> str:
    """``0x`` + the 4-byte selector of a custom error such as ``DigestAlreadyUsed()``."""
    return "0x" + keccak(text=name)[:4].hex()
