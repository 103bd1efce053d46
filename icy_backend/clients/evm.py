"""Base (EVM) JSON-RPC 2.0 client: single and batch requests, typed helpers, ints for wei (SPEC §7)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

import httpx
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import InvalidResponse, JsonRpcError
from icy_backend.clients.http import Request, Upstream, response_json
from icy_backend.metrics.families import Metrics

SERVICE = "base_rpc"
TOTAL_SUPPLY = bytes.fromhex("18160ddd")
BALANCE_OF = bytes.fromhex("70a08231")

T = TypeVar("T")

BlockTag = int | Literal["latest", "pending", "earliest", "safe", "finalized"]


@dataclass(frozen=True)
class Log:
    address: str
    topics: list[str]
    data: bytes
    block_number: int
    transaction_hash: str
    log_index: int
    block_hash: str
    removed: bool = False


@dataclass(frozen=True)
class Receipt:
    transaction_hash: str
    block_number: int
    block_hash: str
    status: int  # 1 success, 0 reverted
    from_address: str
    to_address: str | None
    gas_used: int
    logs: list[Log]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class Transaction:
    hash: str
    from_address: str
    to_address: str | None
    input: bytes
    value: int
    nonce: int
    block_number: int | None  # None while pending
    block_hash: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    timestamp: int
    base_fee_per_gas: int | None
    transactions: list[Any]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class BatchResult(Sequence[Any]):
    """The raw results of one JSON-RPC batch, all answered by the endpoint at position ``endpoint`` (0-based,
    in the configured order; -1 for an empty batch). Indexable and unpackable like the list of results."""

    endpoint: int
    results: tuple[Any, ...]

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)


def hex_int(value: Any) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError("expected a hex quantity")
    return int(value, 16)


def opt_hex_int(value: Any) -> int | None:
    return None if value is None else hex_int(value)


def hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError("expected hex data")
    return bytes.fromhex(value[2:])


def block_tag(block: BlockTag) -> str:
    return hex(block) if isinstance(block, int) else block


def parse_log(data: Any) -> Log:
    return Log(
        address=str(data["address"]).lower(),
        topics=[str(t).lower() for t in data["topics"]],
        data=hex_bytes(data["data"]),
        block_number=hex_int(data["blockNumber"]),
        transaction_hash=str(data["transactionHash"]).lower(),
        log_index=hex_int(data["logIndex"]),
        block_hash=str(data["blockHash"]).lower(),
        removed=bool(data.get("removed", False)),
    )


def parse_receipt(data: Any) -> Receipt:
    return Receipt(
        transaction_hash=str(data["transactionHash"]).lower(),
        block_number=hex_int(data["blockNumber"]),
        block_hash=str(data["blockHash"]).lower(),
        status=hex_int(data.get("status", "0x1")),
        from_address=str(data["from"]).lower(),
        to_address=data["to"].lower() if data.get("to") else None,
        gas_used=hex_int(data.get("gasUsed", "0x0")),
        logs=[parse_log(entry) for entry in data.get("logs", [])],
        raw=data,
    )


def parse_transaction(data: Any) -> Transaction:
    return Transaction(
        hash=str(data["hash"]).lower(),
        from_address=str(data["from"]).lower(),
        to_address=data["to"].lower() if data.get("to") else None,
        input=hex_bytes(data.get("input", data.get("data", "0x"))),
        value=hex_int(data.get("value", "0x0")),
        nonce=hex_int(data["nonce"]),
        block_number=opt_hex_int(data.get("blockNumber")),
        block_hash=data.get("blockHash"),
        raw=data,
    )


def parse_block(data: Any) -> Block:
    return Block(
        number=hex_int(data["number"]),
        hash=str(data["hash"]).lower(),
        timestamp=hex_int(data["timestamp"]),
        base_fee_per_gas=opt_hex_int(data.get("baseFeePerGas")),
        transactions=list(data.get("transactions", [])),
        raw=data,
    )


def _error(data: Any) -> JsonRpcError:
    err = data["error"]
    if not isinstance(err, dict):
        raise InvalidResponse(SERVICE, "JSON-RPC error is not an object")
    code = err.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise InvalidResponse(SERVICE, "JSON-RPC error without a code")
    return JsonRpcError(SERVICE, code, str(err.get("message", "")), err.get("data"))


def _single(data: Any, request_id: int) -> Any:
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
        raise InvalidResponse(SERVICE, "not a JSON-RPC 2.0 response")
    if data.get("error") is not None:
        raise _error(data)
    if "result" not in data or data.get("id") != request_id:
        raise InvalidResponse(SERVICE, "JSON-RPC response without result or with another id")
    return data["result"]


class EvmRpcClient:
    """JSON-RPC over the shared pipeline (breaker ``base_rpc``, failover, retries for reads)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoints: list[str],
        breakers: Breakers,
        metrics: Metrics,
        *,
        deadline: float = 10.0,
    ) -> None:
        self.upstream = Upstream(SERVICE, http, endpoints, breakers, metrics, deadline=deadline)
        self._ids = itertools.count(1)

    # ---- raw JSON-RPC ----------------------------------------------------------------------------------

    async def request(self, method: str, params: Sequence[Any] = (), *, idempotent: bool = True) -> Any:
        """One JSON-RPC call; an error object raises :class:`JsonRpcError`. Metric operation: ``method``."""
        return await self._request(method, params, _identity, idempotent=idempotent)

    async def _request(
        self, method: str, params: Sequence[Any], convert: Callable[[Any], T], *, idempotent: bool = True
    ) -> T:
        # ``convert`` runs inside the attempt, so a malformed result is an invalid response (a failure).
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        return await self.upstream.call(
            method,
            Request("POST", json=body),
            lambda r: convert(_single(response_json(SERVICE, method, r), request_id)),
            idempotent=idempotent,
        )

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *, op: str = "batch") -> BatchResult:
        """One JSON-RPC batch answered by **one endpoint**: every result comes from the same node.

        The batch is a single logical call (breaker ``base_rpc``, deadline, metrics under ``op``); failover and
        retries move the *whole* batch to another endpoint, never part of it, so callers may compare the
        results with each other (e.g. logs with the header of the range's last block, or an account nonce with
        a receipt and ``eth_blockNumber``). Results are in call order, ``None`` where the node answered null.
        An error object in any answer raises :class:`JsonRpcError` for the whole batch (a failure-class error,
        such as a rate limit, fails the batch over to the next endpoint; an answer such as "range too large"
        does not).
        """
        if not calls:
            return BatchResult(endpoint=-1, results=())
        ids = [next(self._ids) for _ in calls]
        body = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in zip(ids, calls, strict=True)
        ]

        def parse(r: httpx.Response) -> list[Any]:
            data = response_json(SERVICE, op, r)
            if isinstance(data, dict) and data.get("error") is not None:
                raise _error(data)  # the whole batch was refused
            if not isinstance(data, list):
                raise InvalidResponse(SERVICE, f"{op}: batch answer is not a list")
            by_id = {item.get("id"): item for item in data if isinstance(item, dict)}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise InvalidResponse(SERVICE, f"{op}: batch answer lacks {len(missing)} result(s)")
            return [_single(by_id[i], i) for i in ids]

        endpoint, results = await self.upstream.call_indexed(op, Request("POST", json=body), parse)
        return BatchResult(endpoint=endpoint, results=tuple(results))

    # ---- typed helpers ---------------------------------------------------------------------------------

    async def chain_id(self) -> int:
        return await self._request("eth_chainId", (), hex_int)

    async def net_version(self) -> int:
        return await self._request("net_version", (), lambda v: int(str(v)))

    async def block_number(self) -> int:
        return await self._request("eth_blockNumber", (), hex_int)

    async def call(self, to: str, data: bytes, block: BlockTag = "latest") -> bytes:
        return await self._request("eth_call", _call_params(to, data, block), hex_bytes)

    async def total_supply(self, token: str, block: BlockTag = "latest") -> int:
        return await self._request("eth_call", _call_params(token, TOTAL_SUPPLY, block), _uint256)

    async def balance_of(self, token: str, address: str, block: BlockTag = "latest") -> int:
        data = BALANCE_OF + abi_encode(["address"], [address])
        return await self._request("eth_call", _call_params(token, data, block), _uint256)

    async def get_logs(
        self, address: str | list[str], topics: Sequence[Any], from_block: BlockTag, to_block: BlockTag
    ) -> list[Log]:
        """Logs in ``[from_block, to_block]``; a too-large range raises :class:`JsonRpcError` (an answer)."""
        query = {
            "address": address,
            "topics": list(topics),
            "fromBlock": block_tag(from_block),
            "toBlock": block_tag(to_block),
        }
        return await self._request("eth_getLogs", [query], lambda result: [parse_log(e) for e in result])

    async def transaction_receipt(self, tx_hash: str) -> Receipt | None:
        return await self._request("eth_getTransactionReceipt", [tx_hash], _optional(parse_receipt))

    async def transaction_by_hash(self, tx_hash: str) -> Transaction | None:
        return await self._request("eth_getTransactionByHash", [tx_hash], _optional(parse_transaction))

    async def block_by_number(self, block: BlockTag = "latest", full_transactions: bool = False) -> Block | None:
        params = [block_tag(block), full_transactions]
        return await self._request("eth_getBlockByNumber", params, _optional(parse_block))

    async def transaction_count(self, address: str, block: BlockTag = "pending") -> int:
        return await self._request("eth_getTransactionCount", [address, block_tag(block)], hex_int)

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        return await self._request("eth_estimateGas", [tx], hex_int)

    async def max_priority_fee_per_gas(self) -> int:
        return await self._request("eth_maxPriorityFeePerGas", (), hex_int)

    async def send_raw_transaction(self, raw: bytes | str) -> str:
        """Broadcast a signed transaction; returns its hash. Never retried (the caller reconciles)."""
        raw_hex = raw if isinstance(raw, str) else "0x" + raw.hex()
        return await self._request("eth_sendRawTransaction", [raw_hex], _tx_hash, idempotent=False)

    async def probe(self) -> tuple[int, int]:
        """``(chain_id, block_number)`` in one batch to the current endpoint: no breaker, retry or metrics."""
        ids = [next(self._ids), next(self._ids)]
        body = [
            {"jsonrpc": "2.0", "id": ids[0], "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": ids[1], "method": "eth_blockNumber", "params": []},
        ]

        def parse(r: httpx.Response) -> tuple[int, int]:
            data = response_json(SERVICE, "probe", r)
            if not isinstance(data, list):
                raise InvalidResponse(SERVICE, "probe: batch answer is not a list")
            by_id = {item.get("id"): item for item in data if isinstance(item, dict)}
            return hex_int(_single(by_id[ids[0]], ids[0])), hex_int(_single(by_id[ids[1]], ids[1]))

        return await self.upstream.probe_request(Request("POST", json=body), parse)


def _call_params(to: str, data: bytes, block: BlockTag) -> list[Any]:
    return [{"to": to, "data": "0x" + data.hex()}, block_tag(block)]


def _uint256(result: Any) -> int:
    data = hex_bytes(result)
    if len(data) < 32:
        raise InvalidResponse(SERVICE, "eth_call: short uint256")
    value: int = abi_decode(["uint256"], data[:32])[0]
    return value


def _identity(value: Any) -> Any:
    return value


def _optional(parse: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda value: None if value is None else parse(value)


def _tx_hash(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise ValueError("not a transaction hash")
    return value.lower()
