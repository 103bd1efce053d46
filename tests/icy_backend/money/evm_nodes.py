"""Test-side JSON-RPC nodes over the EVM simulator, for behaviours of real nodes that the swap-request tests need:

* ``eth_getTransactionCount`` at a past block number counts only what was mined up to that block (and a block
  past the node's head is an error, ``header not found``, as geth answers);
* a mempool that **holds** transactions (``hold=True``: sent transactions wait, unmined, until ``release()``)
  and accepts a same-nonce replacement only when both fee caps rise by at least 10 % (else ``replacement
  transaction underpriced``; with ``accept_replacements=False`` every replacement is refused, as a node that has
  already propagated the original may do).

Everything else is answered by the wrapped simulator node (primary or lagging replica), batches included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_utils.crypto import keccak
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from icy_backend.breakers import Breakers
from icy_backend.clients.evm import EvmRpcClient
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.settings import Settings
from icy_backend.sim.combined import PrefixRouter
from icy_backend.sim.evm import EvmNode, EvmSim
from icy_backend.sim.evm_swap import apply_raw_transaction
from icy_backend.sim.faults import FaultInjector, FaultSet


@dataclass
class Pooled:
    raw: str
    hash: str
    sender: str
    nonce: int
    max_fee: int
    max_priority: int


def decode(raw: str) -> Pooled:
    data = bytes.fromhex(raw.removeprefix("0x"))
    fields: Any = rlp.decode(data[1:])
    nonce, tip, max_fee = (int.from_bytes(fields[i], "big") for i in (1, 2, 3))
    sender = str(Account.recover_transaction(data)).lower()
    return Pooled(raw, "0x" + keccak(data).hex(), sender, nonce, max_fee, tip)


class Node:
    """An ASGI JSON-RPC node (``.app``, ``.faults``) over ``node`` (a simulator node)."""

    def __init__(self, sim: EvmSim, node: EvmNode, *, hold: bool = False, accept_replacements: bool = True) -> None:
        self.sim = sim
        self.node = node
        self.hold = hold
        self.accept_replacements = accept_replacements
        self.pool: dict[tuple[str, int], Pooled] = {}
        self.sent: list[str] = []  # every raw transaction this node was asked to send
        self.faults = FaultSet()
        self.app = FaultInjector(self._asgi, self.faults)

    def release(self) -> None:
        """Hand the held transactions to the chain (they are mined with the next block)."""
        pooled, self.pool = list(self.pool.values()), {}
        for tx in sorted(pooled, key=lambda t: t.nonce):
            apply_raw_transaction(self.sim, tx.raw)

    async def _asgi(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        body = json.loads(await request.body())
        answer: Any = [self.handle(item) for item in body] if isinstance(body, list) else self.handle(body)
        response: Response = JSONResponse(answer)
        await response(scope, receive, send)

    def handle(self, item: dict[str, Any]) -> dict[str, Any]:
        method, params = item.get("method"), item.get("params") or []
        try:
            if method == "eth_getTransactionCount":
                return self._ok(item, self._count(params))
            if method == "eth_sendRawTransaction":
                self.sent.append(str(params[0]))
                if self.hold:
                    return self._ok(item, self._pool(str(params[0])))
            if method in ("eth_getTransactionByHash", "eth_getTransactionReceipt"):
                pooled = self._pooled(str(params[0]))
                if pooled is not None:
                    return self._ok(item, None if method == "eth_getTransactionReceipt" else self._pending(pooled))
        except _Error as exc:
            return {"jsonrpc": "2.0", "id": item.get("id"), "error": {"code": -32000, "message": exc.message}}
        return self.node.handle(item)

    @staticmethod
    def _ok(item: dict[str, Any], result: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": item.get("id"), "result": result}

    def _count(self, params: list[Any]) -> str:
        sender = str(params[0]).lower()
        tag = params[1] if len(params) > 1 else "latest"
        head = self.node.head
        if tag in ("latest", "pending"):
            block = head
        else:
            block = int(tag, 16)
            if block > head:
                raise _Error("header not found")
        mined = sum(
            1
            for tx in self.sim.txs.values()
            if tx.frm == sender and tx.block_number is not None and tx.block_number <= block
        )
        if tag == "pending":
            if self.node.lag == 0:
                mined += sum(1 for tx in self.sim.pending if tx.frm == sender)
            mined += sum(1 for (s, _n) in self.pool if s == sender)
        return hex(mined)

    def _pool(self, raw: str) -> str:
        tx = decode(raw)
        old = self.pool.get((tx.sender, tx.nonce))
        if old is not None and old.hash == tx.hash:
            raise _Error("already known")
        if old is not None and (
            not self.accept_replacements
            or tx.max_fee * 10 < old.max_fee * 11
            or tx.max_priority * 10 < old.max_priority * 11
        ):
            raise _Error("replacement transaction underpriced")
        if int(self._count([tx.sender, "latest"]), 16) > tx.nonce:
            raise _Error("nonce too low")
        self.pool[(tx.sender, tx.nonce)] = tx
        return tx.hash

    def _pooled(self, tx_hash: str) -> Pooled | None:
        return next((t for t in self.pool.values() if t.hash == tx_hash.lower()), None)

    def _pending(self, tx: Pooled) -> dict[str, Any]:
        return {
            "hash": tx.hash,
            "from": tx.sender,
            "to": self.sim.swap_address.lower(),
            "nonce": hex(tx.nonce),
            "input": "0x",
            "value": "0x0",
            "blockNumber": None,
            "blockHash": None,
            "maxFeePerGas": hex(tx.max_fee),
            "maxPriorityFeePerGas": hex(tx.max_priority),
        }


class _Error(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def evm_client(http_clients: list[httpx.AsyncClient], *nodes: Node) -> EvmRpcClient:
    """A client whose endpoints are ``nodes``, in order (failover goes down the list); its breaker never opens
    (these tests are about decisions). The HTTP client is appended to ``http_clients`` for closing."""
    router = PrefixRouter({f"/n{i}": node.app for i, node in enumerate(nodes)})
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=router))
    http_clients.append(http)
    metrics = Metrics(make_registry())
    settings = Settings(_env_file=None, APP_ENV="test", CB_BASE_RPC_THRESHOLD=1000)
    breakers = Breakers(settings, metrics)
    return EvmRpcClient(http, [f"http://evm/n{i}" for i in range(len(nodes))], breakers, metrics, deadline=2.0)
