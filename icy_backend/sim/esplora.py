"""Esplora (Blockstream API) simulator: the HTTP routes over `EsploraChain`, with fault injection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from embit.script import address_to_scriptpubkey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from icy_backend.sim.esplora_chain import (
    PAGE_CONFIRMED,
    PAGE_MEMPOOL,
    BroadcastRejected,
    EsploraChain,
    Output,
    StoredTx,
)
from icy_backend.sim.faults import FaultInjector, FaultSet

__all__ = ["BroadcastRejected", "EsploraSim"]


class EsploraSim(EsploraChain):
    """Esplora REST simulator. ``.app`` is the ASGI app (with fault injection), ``.faults`` its faults."""

    def __init__(
        self,
        network: str = "testnet",
        *,
        start_height: int = 100,
        verify_signatures: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(network, start_height=start_height, verify_signatures=verify_signatures, clock=clock)
        self.faults = FaultSet()
        self.app = FaultInjector(self._starlette(), self.faults)

    # ------------------------------------------------------------------ JSON shapes

    def status_json(self, tx: StoredTx) -> dict[str, Any]:
        if tx.block_height is None:
            return {"confirmed": False}
        block = self._block(tx.block_height)
        return {
            "confirmed": True,
            "block_height": block.height,
            "block_hash": block.hash,
            "block_time": block.time,
        }

    def tx_json(self, tx: StoredTx) -> dict[str, Any]:
        return {
            "txid": tx.txid,
            "version": tx.version,
            "locktime": tx.locktime,
            "vin": [
                {
                    "txid": i.txid,
                    "vout": i.vout,
                    "prevout": _out_json(i.prevout),
                    "scriptsig": i.scriptsig,
                    "scriptsig_asm": "",
                    "witness": i.witness,
                    "is_coinbase": False,
                    "sequence": i.sequence,
                }
                for i in tx.vin
            ],
            "vout": [_out_json(o) for o in tx.vout],
            "size": tx.size,
            "weight": tx.weight,
            "fee": tx.fee,
            "status": self.status_json(tx),
        }

    def history(self, address: str) -> tuple[list[StoredTx], list[StoredTx]]:
        """(mempool, confirmed) transactions touching ``address``, newest first."""
        txs = [self.txs[t] for t in self.address_txs.get(address, []) if not self.txs[t].evicted]
        mempool = sorted((t for t in txs if t.block_height is None), key=lambda t: -t.order)
        confirmed = sorted(
            (t for t in txs if t.block_height is not None), key=lambda t: (-(t.block_height or 0), -t.order)
        )
        return mempool, confirmed

    def address_json(self, address: str) -> dict[str, Any]:
        stats = {
            key: {
                "funded_txo_count": 0,
                "funded_txo_sum": 0,
                "spent_txo_count": 0,
                "spent_txo_sum": 0,
                "tx_count": 0,
            }
            for key in ("chain_stats", "mempool_stats")
        }
        mempool, confirmed = self.history(address)
        for key, txs in (("chain_stats", confirmed), ("mempool_stats", mempool)):
            s = stats[key]
            for tx in txs:
                s["tx_count"] += 1
                for o in tx.vout:
                    if o.address == address:
                        s["funded_txo_count"] += 1
                        s["funded_txo_sum"] += o.value
                for i in tx.vin:
                    if i.prevout.address == address:
                        s["spent_txo_count"] += 1
                        s["spent_txo_sum"] += i.prevout.value
        return {"address": address, **stats}

    def utxos_json(self, address: str) -> list[dict[str, Any]]:
        mempool, confirmed = self.history(address)
        result = []
        for tx in mempool + confirmed:
            for n, o in enumerate(tx.vout):
                if o.address == address and (tx.txid, n) not in self.outspends:
                    result.append({"txid": tx.txid, "vout": n, "status": self.status_json(tx), "value": o.value})
        return result

    # ------------------------------------------------------------------ HTTP

    def _starlette(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/address/{address}", self._h_address),
                Route("/address/{address}/utxo", self._h_utxo),
                Route("/address/{address}/txs", self._h_txs),
                Route("/address/{address}/txs/chain", self._h_txs_chain),
                Route("/address/{address}/txs/chain/{last_seen}", self._h_txs_chain),
                Route("/address/{address}/txs/mempool", self._h_txs_mempool),
                Route("/fee-estimates", self._h_fees),
                Route("/tx/{txid}", self._h_tx),
                Route("/tx/{txid}/status", self._h_tx_status),
                Route("/tx/{txid}/hex", self._h_tx_hex),
                Route("/tx/{txid}/outspend/{vout:int}", self._h_outspend),
                Route("/tx/{txid}/outspends", self._h_outspends),
                Route("/tx", self._h_post_tx, methods=["POST"]),
                Route("/blocks/tip/height", self._h_tip_height),
                Route("/blocks/tip/hash", self._h_tip_hash),
                Route("/_sim/mine", self._h_mine, methods=["POST"]),
                Route("/_sim/payments", self._h_payments),
                Route("/_sim/fund", self._h_fund, methods=["POST"]),
                Route("/_sim/fee-estimates", self._h_set_fees, methods=["PUT"]),
            ]
        )

    def _valid_address(self, address: str) -> bool:
        try:
            script = address_to_scriptpubkey(address)
            return bool(script.address(self.network) == address)
        except Exception:
            return False

    def _tx_or_none(self, txid: str) -> StoredTx | None:
        tx = self.txs.get(txid)
        return None if tx is None or tx.evicted else tx

    async def _h_address(self, request: Request) -> Response:
        address = request.path_params["address"]
        if not self._valid_address(address):
            return PlainTextResponse("Invalid Bitcoin address", status_code=400)
        return JSONResponse(self.address_json(address))

    async def _h_utxo(self, request: Request) -> Response:
        address = request.path_params["address"]
        if not self._valid_address(address):
            return PlainTextResponse("Invalid Bitcoin address", status_code=400)
        return JSONResponse(self.utxos_json(address))

    async def _h_txs(self, request: Request) -> Response:
        address = request.path_params["address"]
        if not self._valid_address(address):
            return PlainTextResponse("Invalid Bitcoin address", status_code=400)
        mempool, confirmed = self.history(address)
        page = mempool[:PAGE_MEMPOOL] + confirmed[:PAGE_CONFIRMED]
        return JSONResponse([self.tx_json(t) for t in page])

    async def _h_txs_mempool(self, request: Request) -> Response:
        mempool, _ = self.history(request.path_params["address"])
        return JSONResponse([self.tx_json(t) for t in mempool[:PAGE_MEMPOOL]])

    async def _h_txs_chain(self, request: Request) -> Response:
        address = request.path_params["address"]
        if not self._valid_address(address):
            return PlainTextResponse("Invalid Bitcoin address", status_code=400)
        _, confirmed = self.history(address)
        last_seen = request.path_params.get("last_seen")
        if last_seen is not None:
            ids = [t.txid for t in confirmed]
            confirmed = confirmed[ids.index(last_seen) + 1 :] if last_seen in ids else []
        return JSONResponse([self.tx_json(t) for t in confirmed[:PAGE_CONFIRMED]])

    async def _h_fees(self, request: Request) -> Response:
        return JSONResponse(self.fee_estimates)

    async def _h_tx(self, request: Request) -> Response:
        tx = self._tx_or_none(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse(self.tx_json(tx))

    async def _h_tx_status(self, request: Request) -> Response:
        tx = self._tx_or_none(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse(self.status_json(tx))

    async def _h_tx_hex(self, request: Request) -> Response:
        tx = self._tx_or_none(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return PlainTextResponse(tx.raw.hex())

    def _outspend_json(self, txid: str, vout: int) -> dict[str, Any]:
        spender = self.outspends.get((txid, vout))
        if spender is None:
            return {"spent": False}
        return {
            "spent": True,
            "txid": spender[0],
            "vin": spender[1],
            "status": self.status_json(self.txs[spender[0]]),
        }

    async def _h_outspend(self, request: Request) -> Response:
        tx = self._tx_or_none(request.path_params["txid"])
        vout: int = request.path_params["vout"]
        if tx is None or vout >= len(tx.vout):
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse(self._outspend_json(tx.txid, vout))

    async def _h_outspends(self, request: Request) -> Response:
        tx = self._tx_or_none(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse([self._outspend_json(tx.txid, n) for n in range(len(tx.vout))])

    async def _h_post_tx(self, request: Request) -> Response:
        body = (await request.body()).decode(errors="replace").strip()
        try:
            txid = self.broadcast(body)
        except BroadcastRejected as exc:
            return PlainTextResponse(exc.body(), status_code=400)
        return PlainTextResponse(txid)

    async def _h_tip_height(self, request: Request) -> Response:
        return PlainTextResponse(str(self.height))

    async def _h_tip_hash(self, request: Request) -> Response:
        return PlainTextResponse(self.blocks[-1].hash)

    async def _h_mine(self, request: Request) -> Response:
        return JSONResponse({"height": self.mine()})

    async def _h_payments(self, request: Request) -> Response:
        return JSONResponse(self.payments())

    async def _h_fund(self, request: Request) -> Response:
        data = await request.json()
        txid, vout = self.fund(str(data["address"]), int(data["value"]), bool(data.get("confirmed", True)))
        return JSONResponse({"txid": txid, "vout": vout})

    async def _h_set_fees(self, request: Request) -> Response:
        self.set_fee_estimates(await request.json())
        return JSONResponse(self.fee_estimates)


def _out_json(o: Output) -> dict[str, Any]:
    return {
        "scriptpubkey": o.script.hex(),
        "scriptpubkey_asm": "",
        "scriptpubkey_type": o.type,
        "scriptpubkey_address": o.address,
        "value": o.value,
    }
