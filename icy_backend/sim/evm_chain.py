"""State of the EVM simulator: blocks, transactions, logs, the ICY ERC-20 token and the swap contract."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from icy_backend.sim import abi

EMPTY_TRIE_ROOT = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
BASE_FEE = 10_000_000  # 0.01 gwei
PRIORITY_FEE = 1_000_000
DEFAULT_GAS = 150_000


def sim_address(label: str) -> str:
    """A deterministic checksummed address derived from a label."""
    return str(to_checksum_address(keccak(text=f"icy-sim:{label}")[-20:]))


def norm(address: str) -> str:
    return address.lower()


@dataclass
class Log:
    address: str
    topics: list[str]
    data: str
    tx: EvmTx
    log_index: int = 0

    def to_json(self) -> dict[str, Any]:
        tx = self.tx
        return {
            "address": self.address,
            "topics": list(self.topics),
            "data": self.data,
            "blockNumber": None if tx.block_number is None else hex(tx.block_number),
            "blockHash": tx.block_hash,
            "transactionHash": tx.hash,
            "transactionIndex": None if tx.index is None else hex(tx.index),
            "logIndex": hex(self.log_index),
            "removed": False,
        }


@dataclass
class EvmTx:
    hash: str
    frm: str
    to: str | None
    nonce: int
    input: str
    chain_id: int
    value: int = 0
    gas: int = DEFAULT_GAS
    status: int = 1
    logs: list[Log] = field(default_factory=list)
    v: int = 0
    r: int = 1
    s: int = 1
    max_fee: int = 2 * BASE_FEE + PRIORITY_FEE
    max_priority: int = PRIORITY_FEE
    block_number: int | None = None
    block_hash: str | None = None
    index: int | None = None
    gas_used: int = 60_000
    cumulative_gas: int = 60_000


@dataclass
class EvmBlock:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    txs: list[EvmTx]
    base_fee: int = BASE_FEE


class RpcError(Exception):
    """A JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class EvmChain:
    """Blocks, transactions and logs, with the ICY token and the swap contract as native state."""

    def __init__(
        self,
        *,
        chain_id: int = 84532,
        icy_address: str | None = None,
        swap_address: str | None = None,
        signer_address: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chain_id = chain_id
        self.icy_address = to_checksum_address(icy_address or sim_address("icy-token"))
        self.swap_address = to_checksum_address(swap_address or sim_address("icy-btc-swap"))
        self.signer_address = to_checksum_address(signer_address) if signer_address else None
        self.clock = clock
        self.log_range_limit = 10_000
        self.balances: dict[str, int] = {}
        self.total_supply = 0
        self.nonces: dict[str, int] = {}
        self.txs: dict[str, EvmTx] = {}
        self.pending: list[EvmTx] = []
        self.used_digests: set[bytes] = set()
        self._counter = 0
        self._mined = 0
        self.removed_logs: list[dict[str, Any]] = []
        self.finality_depth = 0  # the "safe"/"finalized" block tags resolve to head - finality_depth
        self._log_blocks: list[int] = []  # numbers of blocks holding logs, ascending
        genesis_hash = "0x" + keccak(text=f"icy-sim genesis {chain_id}").hex()
        self.blocks: list[EvmBlock] = [EvmBlock(0, genesis_hash, "0x" + "00" * 32, int(clock()), [])]

    # ------------------------------------------------------------------ test-facing API

    @property
    def head(self) -> int:
        return self.blocks[-1].number

    def set_chain_id(self, chain_id: int) -> None:
        self.chain_id = chain_id

    def set_log_range_limit(self, limit: int) -> None:
        self.log_range_limit = limit

    def balance_of(self, address: str) -> int:
        return self.balances.get(norm(address), 0)

    def mint(self, to: str, amount: int) -> str:
        """Mint ICY to ``to`` (a Transfer from the zero address in the pending block); returns the tx hash."""
        self.balances[norm(to)] = self.balance_of(to) + amount
        self.total_supply += amount
        tx = self._new_tx(self.icy_address, self.icy_address, "0x40c10f19")
        self._transfer_log(tx, abi.ZERO_ADDRESS, to, amount)
        return tx.hash

    def transfer(self, frm: str, to: str, amount: int) -> str:
        """Move ICY (a Transfer log in the pending block); returns the tx hash."""
        self._move(frm, to, amount)
        tx = self._new_tx(frm, self.icy_address, abi.transfer_calldata(to, amount))
        self._transfer_log(tx, frm, to, amount)
        return tx.hash

    def emit_swap(self, icy_amount: int, btc_address: str, btc_amount: int, frm: str, *, count: int = 1) -> str:
        """A swap call from ``frm`` in the pending block emitting ``count`` identical ``Swap`` events (a batched
        call): for each, ICY moves to the swap contract when ``frm`` holds enough (with its Transfer log), then
        the event. ``btc_amount`` is not checked against any price (a leaked signer key). Returns the tx hash."""
        if count < 1:
            raise ValueError("count must be at least 1")
        calldata = abi.swap_calldata(icy_amount, btc_address, btc_amount, self._counter, 0, b"\x00" * 65)
        tx = self._new_tx(frm, self.swap_address, calldata)
        for _ in range(count):
            if self.balance_of(frm) >= icy_amount:
                self._move(frm, self.swap_address, icy_amount)
                self._transfer_log(tx, frm, self.swap_address, icy_amount)
            data = abi.swap_data(icy_amount, btc_address, btc_amount)
            tx.logs.append(Log(norm(self.swap_address), [abi.SWAP_TOPIC], data, tx))
        return tx.hash

    def mine_block(self) -> int:
        """Include every pending transaction in a new block; returns its number."""
        parent = self.blocks[-1]
        number = parent.number + 1
        timestamp = max(int(self.clock()), parent.timestamp + 1)
        self._mined += 1  # in the hash: a height re-mined after a reorg gets a new hash
        block_hash = "0x" + keccak(text=f"{parent.hash}:{number}:{timestamp}:{self.chain_id}:{self._mined}").hex()
        txs, self.pending = self.pending, []
        log_index = 0
        cumulative = 0
        for index, tx in enumerate(txs):
            tx.block_number, tx.block_hash, tx.index = number, block_hash, index
            cumulative += tx.gas_used
            tx.cumulative_gas = cumulative
            for log in tx.logs:
                log.log_index = log_index
                log_index += 1
        self.blocks.append(EvmBlock(number, block_hash, parent.hash, timestamp, txs))
        if log_index:
            self._log_blocks.append(number)
        return number

    def mine_empty(self, n: int) -> int:
        """Mine ``n`` blocks (the first one takes whatever is pending); returns the new head."""
        for _ in range(n):
            self.mine_block()
        return self.head

    def reorg(self, depth: int, *, reinclude: bool = True, report_removed: bool = False) -> dict[str, Any]:
        """Replace the last ``depth`` blocks with ``depth + 1`` new ones (new hashes; the new chain is longer).

        ``reinclude``: the removed transactions are mined again, each one block later than before (so at other
        block numbers and log indexes); otherwise they vanish with their ICY moves and nonces (the events are
        gone). Transactions pending at the time stay pending. ``report_removed``: from now on ``eth_getLogs`` also
        returns the removed blocks' logs marked ``"removed": true`` (as a node may while a reorg propagates).
        """
        if depth < 1 or depth > self.head:
            raise ValueError(f"depth must be between 1 and {self.head}")
        removed = self.blocks[-depth:]
        del self.blocks[-depth:]
        self._log_blocks = [n for n in self._log_blocks if n <= self.head]
        pending, self.pending = self.pending, []
        if report_removed:
            for block in removed:
                self.removed_logs.extend({**log.to_json(), "removed": True} for tx in block.txs for log in tx.logs)
        for block in removed:
            for tx in block.txs:
                tx.block_number = tx.block_hash = tx.index = None
        if reinclude:
            self.mine_block()  # the fork's first block, without them
            for block in removed:
                self.pending = list(block.txs)
                self.mine_block()
        else:
            for block in reversed(removed):
                for tx in reversed(block.txs):
                    self._drop(tx)
            self.mine_empty(depth + 1)
        self.pending = pending
        return {
            "head": self.head,
            "removed": [b.hash for b in removed],
            "reincluded": sum(len(b.txs) for b in removed) if reinclude else 0,
        }

    def _drop(self, tx: EvmTx) -> None:
        """Undo a transaction that a reorg dropped: its ICY moves (from its Transfer logs) and its nonce."""
        for log in reversed(tx.logs):
            if log.address != norm(self.icy_address) or log.topics[0] != abi.TRANSFER_TOPIC:
                continue
            frm, to = "0x" + log.topics[1][-40:], "0x" + log.topics[2][-40:]
            amount = int(log.data, 16)
            self.balances[to] = self.balance_of(to) - amount
            if frm == abi.ZERO_ADDRESS:
                self.total_supply -= amount
            else:
                self.balances[frm] = self.balance_of(frm) + amount
        del self.txs[tx.hash]
        self.nonces[tx.frm] = max((t.nonce + 1 for t in self.txs.values() if t.frm == tx.frm), default=0)

    def transfer_in(self, tx: EvmTx, frm: str, to: str, amount: int) -> None:
        """Move ICY as part of ``tx`` and append its Transfer log."""
        self._move(frm, to, amount)
        self._transfer_log(tx, frm, to, amount)

    # ------------------------------------------------------------------ internals

    def _move(self, frm: str, to: str, amount: int) -> None:
        if amount < 0 or self.balance_of(frm) < amount:
            raise ValueError("insufficient ICY balance")
        self.balances[norm(frm)] = self.balance_of(frm) - amount
        self.balances[norm(to)] = self.balance_of(to) + amount

    def _new_tx(self, frm: str, to: str, calldata: str) -> EvmTx:
        self._counter += 1
        nonce = self.nonces.get(norm(frm), 0)
        self.nonces[norm(frm)] = nonce + 1
        tx_hash = "0x" + keccak(text=f"icy-sim tx {self.chain_id} {self._counter}").hex()
        tx = EvmTx(tx_hash, norm(frm), norm(to), nonce, calldata, self.chain_id)
        self.txs[tx_hash] = tx
        self.pending.append(tx)
        return tx

    def _transfer_log(self, tx: EvmTx, frm: str, to: str, amount: int) -> None:
        topics = [abi.TRANSFER_TOPIC, abi.address_topic(frm), abi.address_topic(to)]
        tx.logs.append(Log(norm(self.icy_address), topics, abi.transfer_data(amount), tx))

    def block_number(self, tag: Any, *, future: bool = False, head: int | None = None) -> int | None:
        """Resolve a block tag or hex quantity as a node whose head is ``head`` (default: the chain's head);
        None for blocks beyond that head unless ``future``."""
        top = self.head if head is None else head
        if tag in ("safe", "finalized"):
            return max(0, top - self.finality_depth)
        if tag in (None, "latest", "pending"):
            return top
        if tag == "earliest":
            return 0
        if not isinstance(tag, str) or not tag.startswith("0x"):
            raise RpcError(-32602, f"invalid block tag {tag!r}")
        try:
            number = int(tag, 16)
        except ValueError as exc:
            raise RpcError(-32602, f"invalid block tag {tag!r}") from exc
        return number if number <= top or future else None

    def get_logs(self, flt: dict[str, Any], *, head: int | None = None) -> list[dict[str, Any]]:
        """``eth_getLogs`` as a node whose head is ``head``: address and topic filters, inclusive block ranges,
        a range-size limit; blocks past that head hold no logs yet (an empty list, not an error)."""
        top = self.head if head is None else head
        if "blockHash" in flt:
            blocks = [b for b in self.blocks[: top + 1] if b.hash == flt["blockHash"]]
            if not blocks:
                raise RpcError(-32000, "unknown block")
            start = end = blocks[0].number
        else:
            from_block = self.block_number(flt.get("fromBlock", "latest"), future=True, head=top)
            to_block = self.block_number(flt.get("toBlock", "latest"), future=True, head=top)
            assert from_block is not None
            assert to_block is not None
            if from_block > top:
                return []  # nothing mined there yet
            if from_block > to_block:
                raise RpcError(-32602, "invalid block range params")
            if to_block - from_block + 1 > self.log_range_limit:
                raise RpcError(-32005, f"block range too large: query exceeds max block range {self.log_range_limit}")
            start, end = from_block, min(to_block, top)
        addresses = flt.get("address")
        wanted = {norm(a) for a in ([addresses] if isinstance(addresses, str) else addresses or [])}
        topics: list[Any] = flt.get("topics") or []
        result: list[dict[str, Any]] = []
        first = bisect.bisect_left(self._log_blocks, start)
        last = bisect.bisect_right(self._log_blocks, end)
        for number in self._log_blocks[first:last]:
            for tx in self.blocks[number].txs:
                for log in tx.logs:
                    if wanted and log.address not in wanted:
                        continue
                    if _topics_match(topics, log.topics):
                        result.append(log.to_json())
        for stale in self.removed_logs:  # logs of reorged-out blocks, as some nodes still report them
            number = int(stale["blockNumber"], 16)
            in_range = start <= number <= end and (not wanted or stale["address"] in wanted)
            if in_range and _topics_match(topics, stale["topics"]):
                result.append(dict(stale))
        return result


def _topics_match(wanted: list[Any], topics: list[str]) -> bool:
    for position, want in enumerate(wanted):
        if want is None or want == []:
            continue
        options = {w.lower() for w in ([want] if isinstance(want, str) else want)}
        if position >= len(topics) or topics[position] not in options:
            return False
    return True
