"""Esplora (Blockstream API) client with typed results; amounts are integer sats (SPEC §7)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import BroadcastRejected, InvalidResponse, UpstreamHTTPStatus
from icy_backend.clients.http import Request, Upstream, response_json
from icy_backend.metrics.families import Metrics

SERVICE = "blockstream_api"
_NOT_FOUND = frozenset({404})


@dataclass(frozen=True)
class AddressStats:
    """Funded/spent sums of an address, confirmed (chain) and unconfirmed (mempool)."""

    chain_funded: int
    chain_spent: int
    mempool_funded: int
    mempool_spent: int
    chain_tx_count: int = 0
    mempool_tx_count: int = 0

    @property
    def confirmed_balance(self) -> int:
        return self.chain_funded - self.chain_spent

    @property
    def mempool_delta(self) -> int:
        return self.mempool_funded - self.mempool_spent


@dataclass(frozen=True)
class TxStatus:
    confirmed: bool
    block_height: int | None = None
    block_hash: str | None = None
    block_time: int | None = None


@dataclass(frozen=True)
class Utxo:
    txid: str
    vout: int
    value: int
    confirmed: bool
    block_height: int | None


@dataclass(frozen=True)
class TxOutput:
    address: str | None
    value: int
    scriptpubkey: str = ""


@dataclass(frozen=True)
class TxInput:
    txid: str
    vout: int
    prevout: TxOutput | None  # None for a coinbase input
    is_coinbase: bool = False


@dataclass(frozen=True)
class EsploraTx:
    txid: str
    vin: list[TxInput]
    vout: list[TxOutput]
    fee: int
    status: TxStatus


@dataclass(frozen=True)
class Outspend:
    spent: bool
    txid: str | None = None
    vin: int | None = None
    status: TxStatus | None = None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def parse_status(data: Any) -> TxStatus:
    return TxStatus(
        confirmed=bool(data["confirmed"]),
        block_height=_opt_int(data.get("block_height")),
        block_hash=data.get("block_hash"),
        block_time=_opt_int(data.get("block_time")),
    )


def parse_output(data: Any) -> TxOutput:
    return TxOutput(
        address=data.get("scriptpubkey_address"),
        value=_int(data["value"]),
        scriptpubkey=data.get("scriptpubkey", ""),
    )


def parse_tx(data: Any) -> EsploraTx:
    vin = [
        TxInput(
            txid=_str(i.get("txid", "")),
            vout=_int(i.get("vout", 0)),
            prevout=parse_output(i["prevout"]) if i.get("prevout") else None,
            is_coinbase=bool(i.get("is_coinbase", False)),
        )
        for i in data["vin"]
    ]
    return EsploraTx(
        txid=_str(data["txid"]),
        vin=vin,
        vout=[parse_output(o) for o in data["vout"]],
        fee=_int(data.get("fee", 0)),
        status=parse_status(data["status"]),
    )


def _stats(data: Any) -> AddressStats:
    chain, mempool = data["chain_stats"], data["mempool_stats"]
    return AddressStats(
        chain_funded=_int(chain["funded_txo_sum"]),
        chain_spent=_int(chain["spent_txo_sum"]),
        mempool_funded=_int(mempool["funded_txo_sum"]),
        mempool_spent=_int(mempool["spent_txo_sum"]),
        chain_tx_count=_int(chain.get("tx_count", 0)),
        mempool_tx_count=_int(mempool.get("tx_count", 0)),
    )


def _text_int(service: str, op: str, response: httpx.Response) -> int:
    text = response.text.strip()
    if not text.isdigit():
        raise InvalidResponse(service, f"{op}: not an integer")
    return int(text)


# Esplora passes bitcoind's refusal through: ``sendrawtransaction RPC error: {"code":-26,"message":"…"}``.
_REFUSAL = re.compile(r"^sendrawtransaction RPC error: (\{.*\})$", re.DOTALL)


class MalformedRefusal(UpstreamHTTPStatus):
    """A 400 answer to a broadcast whose body is not Esplora's refusal format: the upstream is broken (a
    breaker failure, retried next run), never a verdict on the transaction."""

    def __init__(self, service: str, status_code: int = 400) -> None:
        super().__init__(service, status_code)
        self.error_class = "invalid_response"

    @property
    def is_failure(self) -> bool:
        return True


def refusal_reason(body: str) -> str | None:
    """The node's ``message`` from an Esplora refusal body, or None when the body is not in that format."""
    match = _REFUSAL.match(body.strip())
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str) or not isinstance(data.get("code"), int):
        return None
    return str(data["message"])


class _EsploraUpstream(Upstream):
    def status_error(self, response: httpx.Response) -> UpstreamHTTPStatus:
        if response.status_code == 400 and response.request.method == "POST":
            reason = refusal_reason(response.text)
            if reason is None:
                return MalformedRefusal(self.service)
            return BroadcastRejected(self.service, reason[:500])
        return super().status_error(response)


class EsploraClient:
    """Typed Esplora reads, broadcast (never retried) and a breaker-free probe."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoints: list[str],
        breakers: Breakers,
        metrics: Metrics,
        *,
        deadline: float = 10.0,
    ) -> None:
        self.upstream = _EsploraUpstream(SERVICE, http, endpoints, breakers, metrics, deadline=deadline)

    async def address_stats(self, address: str) -> AddressStats:
        op = "address_stats"
        return await self.upstream.call(
            op, Request("GET", f"/address/{address}"), lambda r: _stats(response_json(SERVICE, op, r))
        )

    async def utxos(self, address: str) -> list[Utxo]:
        op = "utxos"

        def parse(r: httpx.Response) -> list[Utxo]:
            return [
                Utxo(
                    txid=_str(u["txid"]),
                    vout=_int(u["vout"]),
                    value=_int(u["value"]),
                    confirmed=bool(u["status"]["confirmed"]),
                    block_height=_opt_int(u["status"].get("block_height")),
                )
                for u in response_json(SERVICE, op, r)
            ]

        return await self.upstream.call(op, Request("GET", f"/address/{address}/utxo"), parse)

    async def address_txs(self, address: str, last_seen_txid: str | None = None) -> list[EsploraTx]:
        """One page, newest first: mempool + 25 confirmed, or the 25 confirmed after ``last_seen_txid``."""
        op = "address_txs"
        path = f"/address/{address}/txs" + (f"/chain/{last_seen_txid}" if last_seen_txid else "")
        return await self.upstream.call(
            op, Request("GET", path), lambda r: [parse_tx(t) for t in response_json(SERVICE, op, r)]
        )

    async def fee_estimates(self) -> dict[str, float]:
        """Confirmation target (blocks, as a string) -> fee rate in sat/vB (may be fractional)."""
        op = "fee_estimates"

        def parse(r: httpx.Response) -> dict[str, float]:
            data = response_json(SERVICE, op, r)
            if not isinstance(data, dict):
                raise ValueError("expected an object")
            out: dict[str, float] = {}
            for key, value in data.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError("expected a number")
                if not str(key).isdigit() or not math.isfinite(value) or value < 0:
                    raise ValueError("expected block targets and non-negative finite rates")
                out[str(key)] = float(value)
            return out

        return await self.upstream.call(op, Request("GET", "/fee-estimates"), parse)

    async def tx_status(self, txid: str) -> TxStatus | None:
        """The transaction's status, or ``None`` when the node does not know it (404)."""
        op = "tx_status"

        def parse(r: httpx.Response) -> TxStatus | None:
            if r.status_code == 404:
                return None
            return parse_status(response_json(SERVICE, op, r))

        return await self.upstream.call(op, Request("GET", f"/tx/{txid}/status"), parse, accept=_NOT_FOUND)

    async def tx(self, txid: str) -> EsploraTx | None:
        """The transaction, or ``None`` when the node does not know it (404)."""
        op = "tx"

        def parse(r: httpx.Response) -> EsploraTx | None:
            if r.status_code == 404:
                return None
            return parse_tx(response_json(SERVICE, op, r))

        return await self.upstream.call(op, Request("GET", f"/tx/{txid}"), parse, accept=_NOT_FOUND)

    async def outspend(self, txid: str, vout: int) -> Outspend:
        op = "outspend"

        def parse(r: httpx.Response) -> Outspend:
            data = response_json(SERVICE, op, r)
            status = data.get("status")
            return Outspend(
                spent=bool(data["spent"]),
                txid=data.get("txid"),
                vin=_opt_int(data.get("vin")),
                status=parse_status(status) if status else None,
            )

        return await self.upstream.call(op, Request("GET", f"/tx/{txid}/outspend/{vout}"), parse)

    async def tip_height(self) -> int:
        op = "tip_height"
        return await self.upstream.call(op, Request("GET", "/blocks/tip/height"), lambda r: _text_int(SERVICE, op, r))

    async def broadcast(self, raw_hex: str) -> str:
        """POST the raw transaction; returns the txid. Never retried; 400 → :class:`BroadcastRejected`."""
        op = "broadcast"

        def parse(r: httpx.Response) -> str:
            txid = r.text.strip()
            if len(txid) != 64 or any(c not in "0123456789abcdefABCDEF" for c in txid):
                raise InvalidResponse(SERVICE, f"{op}: not a txid")
            return txid.lower()

        request = Request("POST", "/tx", content=raw_hex, headers={"content-type": "text/plain"})
        return await self.upstream.call(op, request, parse, idempotent=False)

    async def probe(self) -> int:
        """Tip height from the current endpoint: outside the breaker, no retry, no failover, no metrics."""
        return await self.upstream.probe_request(
            Request("GET", "/blocks/tip/height"), lambda r: _text_int(SERVICE, "probe", r)
        )
