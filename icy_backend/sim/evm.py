"""EVM JSON-RPC simulator (Base-like): JSON-RPC 2.0 over ``POST /`` with batches, over `EvmChain`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.address import to_checksum_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from icy_backend.sim import abi
from icy_backend.sim.evm_chain import (
    BASE_FEE,
    EMPTY_TRIE_ROOT,
    EMPTY_UNCLES,
    PRIORITY_FEE,
    EvmBlock,
    EvmChain,
    EvmTx,
    RpcError,
    norm,
)
from icy_backend.sim.evm_swap import apply_raw_transaction
from icy_backend.sim.faults import FaultInjector, FaultSet

__all__ = ["EvmNode", "EvmSim", "RpcError"]

FAKE_CODE = "0x6080604052348015600f57600080fd5b50"
REVERT = 3  # geth's "execution reverted" error code


class EvmNode:
    """One JSON-RPC node over a shared `EvmChain`: ``.app`` (with fault injection), ``.faults``, ``.lag``.

    A node ``lag`` blocks behind answers as a real lagging node does: its block number, headers, logs, receipts,
    transactions and nonces are those of the chain ``lag`` blocks ago, and past its head it answers null
    headers and receipts and empty log lists (never an error). ``eth_call`` reads the current state.
    """

    def __init__(self, chain: EvmChain, *, lag: int = 0) -> None:
        self.chain = chain
        self.lag = lag
        self.faults = FaultSet()
        self.app = FaultInjector(self._starlette(), self.faults)
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": lambda p: hex(self.chain.chain_id),
            "net_version": lambda p: str(self.chain.chain_id),
            "web3_clientVersion": lambda p: "icy-backend-sim/1.0",
            "eth_blockNumber": lambda p: hex(self.head),
            "eth_call": self._eth_call,
            "eth_getLogs": self._eth_get_logs,
            "eth_getTransactionReceipt": self._eth_receipt,
            "eth_getTransactionByHash": self._eth_tx_by_hash,
            "eth_getBlockByNumber": self._eth_block_by_number,
            "eth_getBlockByHash": self._eth_block_by_hash,
            "eth_getTransactionCount": self._eth_tx_count,
            "eth_getCode": self._eth_get_code,
            "eth_getBalance": lambda p: hex(10**20),
            "eth_estimateGas": lambda p: hex(abi_gas(p)),
            "eth_maxPriorityFeePerGas": lambda p: hex(PRIORITY_FEE),
            "eth_gasPrice": lambda p: hex(BASE_FEE + PRIORITY_FEE),
            "eth_sendRawTransaction": self._eth_send_raw,
        }

    @property
    def head(self) -> int:
        """This node's head: the chain's head ``lag`` blocks ago."""
        return max(0, self.chain.head - self.lag)

    def _knows(self, tx: EvmTx) -> bool:
        """Whether this node has ``tx`` mined (pending ones only when it is up to date)."""
        if tx.block_number is None:
            return self.lag == 0
        return tx.block_number <= self.head

    # ------------------------------------------------------------------ JSON-RPC

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request object."""
        req_id = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                raise RpcError(-32600, "invalid request")
            method = self.methods.get(request["method"])
            if method is None:
                raise RpcError(-32601, f"the method {request['method']} does not exist/is not available")
            params = request.get("params") or []
            if not isinstance(params, list):
                raise RpcError(-32602, "invalid params: expected an array")
            try:
                result = method(params)
            except (IndexError, KeyError, TypeError, ValueError) as exc:
                raise RpcError(-32602, f"invalid params: {exc}") from exc
        except RpcError as exc:
            return {"jsonrpc": "2.0", "id": req_id, "error": exc.to_json()}
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    def _eth_call(self, params: list[Any]) -> str:
        chain = self.chain
        call = params[0]
        to = norm(call.get("to") or "")
        data = bytes.fromhex(str(call.get("input") or call.get("data") or "0x").removeprefix("0x"))
        selector, args = "0x" + data[:4].hex(), data[4:]
        if to == norm(chain.icy_address):
            if selector == abi.SEL_TOTAL_SUPPLY:
                return abi.uint_word(chain.total_supply)
            if selector == abi.SEL_BALANCE_OF:
                (owner,) = decode(["address"], args)
                return abi.uint_word(chain.balance_of(owner))
            if selector == abi.SEL_DECIMALS:
                return abi.uint_word(18)
            if selector == abi.SEL_SYMBOL:
                return abi.hex_data(encode(["string"], ["ICY"]))
            if selector == abi.SEL_NAME:
                return abi.hex_data(encode(["string"], ["Icy"]))
        elif to == norm(chain.swap_address):
            if selector == abi.SEL_SIGNER_ADDRESS and chain.signer_address:
                return abi.hex_data(encode(["address"], [chain.signer_address]))
            if selector == abi.SEL_ICY:
                return abi.hex_data(encode(["address"], [chain.icy_address]))
        else:
            return "0x"  # no code at that address
        raise RpcError(REVERT, "execution reverted", "0x")

    def _eth_get_logs(self, params: list[Any]) -> list[dict[str, Any]]:
        flt = params[0] if params else {}
        if not isinstance(flt, dict):
            raise RpcError(-32602, "invalid filter")
        return self.chain.get_logs(flt, head=self.head)

    def _tx_json(self, tx: EvmTx) -> dict[str, Any]:
        return {
            "type": "0x2",
            "chainId": hex(tx.chain_id),
            "nonce": hex(tx.nonce),
            "hash": tx.hash,
            "from": tx.frm,
            "to": tx.to,
            "value": hex(tx.value),
            "input": tx.input,
            "gas": hex(tx.gas),
            "maxFeePerGas": hex(tx.max_fee),
            "maxPriorityFeePerGas": hex(tx.max_priority),
            "gasPrice": hex(BASE_FEE + tx.max_priority),
            "accessList": [],
            "v": hex(tx.v),
            "yParity": hex(tx.v),
            "r": hex(tx.r),
            "s": hex(tx.s),
            "blockNumber": None if tx.block_number is None else hex(tx.block_number),
            "blockHash": tx.block_hash,
            "transactionIndex": None if tx.index is None else hex(tx.index),
        }

    def _eth_tx_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        tx = self.chain.txs.get(str(params[0]).lower())
        return None if tx is None or not self._knows(tx) else self._tx_json(tx)

    def _eth_receipt(self, params: list[Any]) -> dict[str, Any] | None:
        tx = self.chain.txs.get(str(params[0]).lower())
        if tx is None or tx.block_number is None or not self._knows(tx):
            return None
        return {
            "transactionHash": tx.hash,
            "transactionIndex": hex(tx.index or 0),
            "blockHash": tx.block_hash,
            "blockNumber": hex(tx.block_number),
            "from": tx.frm,
            "to": tx.to,
            "cumulativeGasUsed": hex(tx.cumulative_gas),
            "gasUsed": hex(tx.gas_used),
            "effectiveGasPrice": hex(BASE_FEE + tx.max_priority),
            "contractAddress": None,
            "logs": [log.to_json() for log in tx.logs],
            "logsBloom": "0x" + "00" * 256,
            "status": hex(tx.status),
            "type": "0x2",
        }

    def _block_json(self, block: EvmBlock, full: bool) -> dict[str, Any]:
        txs: list[Any] = [self._tx_json(t) if full else t.hash for t in block.txs]
        return {
            "number": hex(block.number),
            "hash": block.hash,
            "parentHash": block.parent_hash,
            "timestamp": hex(block.timestamp),
            "baseFeePerGas": hex(block.base_fee),
            "gasLimit": hex(30_000_000),
            "gasUsed": hex(sum(t.gas_used for t in block.txs)),
            "miner": "0x4200000000000000000000000000000000000011",
            "difficulty": "0x0",
            "totalDifficulty": "0x0",
            "extraData": "0x",
            "nonce": "0x0000000000000000",
            "mixHash": "0x" + "00" * 32,
            "logsBloom": "0x" + "00" * 256,
            "sha3Uncles": EMPTY_UNCLES,
            "transactionsRoot": EMPTY_TRIE_ROOT if not block.txs else block.hash,
            "stateRoot": block.hash,
            "receiptsRoot": EMPTY_TRIE_ROOT,
            "size": hex(600 + 200 * len(block.txs)),
            "transactions": txs,
            "uncles": [],
            "withdrawals": [],
            "withdrawalsRoot": EMPTY_TRIE_ROOT,
        }

    def _eth_block_by_number(self, params: list[Any]) -> dict[str, Any] | None:
        number = self.chain.block_number(params[0], head=self.head)
        full = bool(params[1]) if len(params) > 1 else False
        return None if number is None else self._block_json(self.chain.blocks[number], full)

    def _eth_block_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        full = bool(params[1]) if len(params) > 1 else False
        for block in self.chain.blocks[: self.head + 1]:
            if block.hash == str(params[0]).lower():
                return self._block_json(block, full)
        return None

    def _eth_tx_count(self, params: list[Any]) -> str:
        """Mined transactions of the sender; with the ``pending`` tag, its pending ones too (like geth)."""
        chain = self.chain
        sender = norm(to_checksum_address(params[0]))
        if self.lag:  # a lagging node knows neither the newer blocks nor the mempool
            head = self.head
            mined = (tx for tx in chain.txs.values() if tx.frm == sender and tx.block_number is not None)
            return hex(sum(1 for tx in mined if tx.block_number is not None and tx.block_number <= head))
        count = chain.nonces.get(sender, 0)
        if (params[1] if len(params) > 1 else "latest") != "pending":
            count -= sum(1 for tx in chain.pending if tx.frm == sender)
        return hex(count)

    def _eth_get_code(self, params: list[Any]) -> str:
        address = norm(params[0])
        return FAKE_CODE if address in (norm(self.chain.icy_address), norm(self.chain.swap_address)) else "0x"

    def _eth_send_raw(self, params: list[Any]) -> str:
        return apply_raw_transaction(self.chain, str(params[0]))

    # ------------------------------------------------------------------ HTTP

    def _starlette(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._h_rpc, methods=["POST"]),
                Route("/_sim/swap", self._h_swap, methods=["POST"]),
                Route("/_sim/mine", self._h_mine, methods=["POST"]),
                Route("/_sim/reorg", self._h_reorg, methods=["POST"]),
                Route("/_sim/lag", self._h_lag, methods=["GET", "PUT"]),
            ]
        )

    async def _h_rpc(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        if isinstance(body, list):
            if not body:
                error = {"code": -32600, "message": "empty batch"}
                return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error})
            return JSONResponse([self.handle(item) for item in body])
        return JSONResponse(self.handle(body))

    async def _h_swap(self, request: Request) -> Response:
        try:
            data = await _control_body(request, {"icy_amount", "btc_address", "btc_amount", "from", "count"})
            count = _int_field(data, "count", 1, minimum=1)
            tx_hash = self.chain.emit_swap(
                _int_field(data, "icy_amount", None, minimum=0),
                str(data["btc_address"]),
                _int_field(data, "btc_amount", None, minimum=0),
                str(data["from"]),
                count=count,
            )
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"transaction_hash": tx_hash, "block_number": self.chain.head + 1, "count": count})

    async def _h_mine(self, request: Request) -> Response:
        try:
            data = await _control_body(request, {"blocks"})
            blocks = _int_field(data, "blocks", 1, minimum=1)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.chain.mine_empty(blocks)
        return JSONResponse({"block_number": self.chain.head})

    async def _h_reorg(self, request: Request) -> Response:
        try:
            data = await _control_body(request, {"depth", "reinclude", "report_removed"})
            depth = _int_field(data, "depth", None, minimum=1)
            reinclude, report_removed = data.get("reinclude", True), data.get("report_removed", False)
            if not isinstance(reinclude, bool) or not isinstance(report_removed, bool):
                raise ValueError("reinclude and report_removed must be booleans")
            result = self.chain.reorg(depth, reinclude=reinclude, report_removed=report_removed)
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(result)

    async def _h_lag(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = await _control_body(request, {"blocks"})
                self.lag = _int_field(data, "blocks", None, minimum=0)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"blocks": self.lag, "head": self.head, "chain_head": self.chain.head})


async def _control_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    """The JSON object of a control request ({} when empty); unknown keys are refused (400)."""
    raw = await request.body()
    data = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown keys: {sorted(unknown)}")
    return data


def _int_field(data: dict[str, Any], key: str, default: int | None, *, minimum: int) -> int:
    value = data.get(key, default)
    if value is None:
        raise KeyError(key)
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # amounts may come as decimal strings
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}")
    return value


class EvmSim(EvmChain):
    """The EVM chain with its primary JSON-RPC node: ``.app``, ``.faults``; ``view()`` adds a replica."""

    def __init__(
        self,
        *,
        chain_id: int = 84532,
        icy_address: str | None = None,
        swap_address: str | None = None,
        signer_address: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            chain_id=chain_id,
            icy_address=icy_address,
            swap_address=swap_address,
            signer_address=signer_address,
            clock=clock,
        )
        self.node = EvmNode(self)
        self.faults = self.node.faults
        self.app = self.node.app

    def view(self, *, lag: int = 0) -> EvmNode:
        """Another node (replica) of this chain with its own faults and lag (``PUT /_sim/lag``)."""
        return EvmNode(self, lag=lag)


def abi_gas(params: list[Any]) -> int:
    return (
        150_000 if params and isinstance(params[0], dict) and params[0].get("data", params[0].get("input")) else 21_000
    )
