"""The Esplora simulator's node vocabulary: limits, Bitcoin Core's RPC codes, refusals and stored shapes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

PAGE_CONFIRMED = 25
PAGE_MEMPOOL = 50
NETWORK_NAMES = {"mainnet": "main", "main": "main", "testnet": "test", "test": "test"}
NETWORK_NAMES.update({"signet": "signet", "regtest": "regtest"})
SCRIPT_TYPES = {
    "p2wpkh": "v0_p2wpkh",
    "p2wsh": "v0_p2wsh",
    "p2tr": "v1_p2tr",
    "p2pkh": "p2pkh",
    "p2sh": "p2sh",
}
DUST = {"p2pkh": 546, "p2sh": 540, "p2wpkh": 294, "p2wsh": 330, "p2tr": 330}
DEFAULT_FEES: dict[str, float] = {"1": 20.1, "2": 15.3, "3": 10.5, "4": 8.2, "5": 6.7, "6": 5.2, "10": 3.4}
DEFAULT_FEES.update({"12": 3.0, "25": 2.1, "144": 1.2, "504": 1.0, "1008": 1.0})
MIN_RELAY_FEE_RATE = 1.0  # sat/vB, also the BIP 125 incremental relay fee
MAX_REPLACEMENTS = 100
FAUCET_FEE = 500
MAX_OP_RETURN = 83
FOREIGN_FEE = 1_000

# Bitcoin Core's RPC error codes (rpc/protocol.h).
RPC_DESERIALIZATION_ERROR = -22
RPC_TRANSACTION_ERROR = -25  # missing inputs
RPC_TRANSACTION_REJECTED = -26  # policy or consensus refusal
RPC_TRANSACTION_ALREADY_IN_CHAIN = -27

# Payment / transaction states. "mempool" and "confirmed" are known to the node; the others are not.
MEMPOOL, CONFIRMED, REPLACED, EVICTED, CONFLICTED = "mempool", "confirmed", "replaced", "evicted", "conflicted"
LIVE = (MEMPOOL, CONFIRMED)

# When this environment variable names a file (the test session sets it), every transaction accepted by
# ``POST /tx`` on any simulator, in-process or ``simulate`` subprocess, is appended to it as one JSON line
# {"raw": hex, "prevouts": [[value, scriptPubKey hex], ...]} so an independent library can re-verify it.
RECORD_ENV = "ICY_SIM_RECORD_TXS"


class BroadcastRejected(Exception):
    """A raw transaction the simulated node refuses, with bitcoind's error code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> str:
        detail = json.dumps({"code": self.code, "message": self.message}, separators=(",", ":"))
        return f"sendrawtransaction RPC error: {detail}"


class ControlError(ValueError):
    """A control request that cannot be carried out (answered 400)."""


def rejected(reason: str, code: int = RPC_TRANSACTION_REJECTED) -> BroadcastRejected:
    return BroadcastRejected(code, reason)


@dataclass
class Output:
    script: bytes
    value: int
    address: str | None
    type: str | None


@dataclass
class Input:
    txid: str
    vout: int
    sequence: int
    witness: list[str]
    scriptsig: str
    prevout: Output


@dataclass
class StoredTx:
    txid: str
    raw: bytes
    version: int
    locktime: int
    vin: list[Input]
    vout: list[Output]
    size: int
    weight: int
    order: int
    block_height: int | None = None
    state: str = MEMPOOL
    broadcast: bool = False  # accepted through POST /tx (listed by payments)
    priority: bool = False  # faucet / foreign spends: mined whatever their fee rate
    addresses: set[str] = field(default_factory=set)

    @property
    def fee(self) -> int:
        return sum(i.prevout.value for i in self.vin) - sum(o.value for o in self.vout)

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4

    @property
    def fee_rate(self) -> float:
        return self.fee / self.vsize

    @property
    def evicted(self) -> bool:
        """Unknown to the node (evicted, replaced, conflicted or dropped)."""
        return self.state not in LIVE

    @property
    def signals_rbf(self) -> bool:
        return any(i.sequence <= 0xFFFFFFFD for i in self.vin)

    def pays_at_least(self, rate: float) -> bool:
        """The fee reaches ``rate`` sat/vB (the same rounding as the acceptance checks)."""
        return self.fee >= fee_at(rate, self.vsize)


@dataclass
class Block:
    height: int
    hash: str
    time: int
    txids: list[str]


def fee_at(rate: float, vsize: int) -> int:
    """Bitcoin Core's CFeeRate::GetFee: rate in sat/kvB × size / 1000, truncated."""
    return round(rate * 1000) * vsize // 1000
