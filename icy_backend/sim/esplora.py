"""Esplora (Blockstream API) simulator: the HTTP routes over `EsploraChain`, with fault injection.

``EsploraSim.app`` serves the node as it is; ``EsploraSim.lagging_view()`` serves a second view of the same
chain that can be told to stay n blocks behind (``PUT /_sim/lag``), as a replica behind a load balancer does.
"""

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
    CONFIRMED,
    MEMPOOL,
    PAGE_CONFIRMED,
    PAGE_MEMPOOL,
    BroadcastRejected,
    EsploraChain,
    Output,
    StoredTx,
)
from icy_backend.sim.esplora_controls import control_routes
from icy_backend.sim.faults import FaultInjector, FaultSet

__all__ = ["BroadcastRejected", "EsploraSim", "EsploraView"]


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
        self.view = EsploraView(self)
        self.faults = self.view.faults
        self.app = self.view.app

    def lagging_view(self) -> EsploraView:
        """Another view of this chain (own faults, own ``lag``) for a second replica such as ``/esplora2``."""
        return EsploraView(self, lagging=True)

    # JSON shapes of the up-to-date view, for tests and the demo.

    def status_json(self, tx: StoredTx) -> dict[str, Any]:
        return self.view.status_json(tx)

    def tx_json(self, tx: StoredTx) -> dict[str, Any]:
        return self.view.tx_json(tx)

    def history(self, address: str) -> tuple[list[StoredTx], list[StoredTx]]:
        return self.view.history(address)

    def address_json(self, address: str) -> dict[str, Any]:
        return self.view.address_json(address)

    def utxos_json(self, address: str) -> list[dict[str, Any]]:
        return self.view.utxos_json(address)


class EsploraView:
    """The Esplora routes over one chain, seen ``lag`` blocks behind its tip (0: up to date).

    A lagging view shows the blocks up to ``tip − lag``; transactions mined after that look unconfirmed (the
    lagging node still holds them in its mempool). Broadcasts go to the shared node.
    """

    def __init__(self, chain: EsploraChain, *, lagging: bool = False) -> None:
        self.chain = chain
        self.lag = 0
        self.faults = FaultSet()
        self.app = FaultInjector(self._starlette(lagging), self.faults)

    # ------------------------------------------------------------------ what this view sees

    @property
    def tip(self) -> int:
        return max(self.chain.height - self.lag, self.chain.blocks[0].height)

    def confirmed(self, tx: StoredTx) -> bool:
        return tx.state == CONFIRMED and tx.block_height is not None and tx.block_height <= self.tip

    def visible(self, txid: str) -> StoredTx | None:
        tx = self.chain.txs.get(txid)
        return tx if tx is not None and tx.state in (MEMPOOL, CONFIRMED) else None

    def spender(self, txid: str, vout: int) -> tuple[str, int] | None:
        return self.chain.outspends.get((txid, vout))

    # ------------------------------------------------------------------ JSON shapes

    def status_json(self, tx: StoredTx) -> dict[str, Any]:
        if not self.confirmed(tx) or tx.block_height is None:
            return {"confirmed": False}
        block = self.chain._block(tx.block_height)
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
        """(mempool, confirmed) transactions touching ``address``, newest first, each once."""
        txs = [t for t in (self.visible(t) for t in self.chain.address_txs.get(address, {})) if t is not None]
        mempool = sorted((t for t in txs if not self.confirmed(t)), key=lambda t: -t.order)
        confirmed = sorted((t for t in txs if self.confirmed(t)), key=lambda t: (-(t.block_height or 0), -t.order))
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
        """Unspent outputs of ``address``; an output spent by a mempool transaction is not listed."""
        mempool, confirmed = self.history(address)
        result = []
        for tx in mempool + confirmed:
            for n, o in enumerate(tx.vout):
                if o.address == address and self.spender(tx.txid, n) is None:
                    result.append({"txid": tx.txid, "vout": n, "status": self.status_json(tx), "value": o.value})
        return result

    def outspend_json(self, txid: str, vout: int) -> dict[str, Any]:
        spender = self.spender(txid, vout)
        if spender is None:
            return {"spent": False}
        return {
            "spent": True,
            "txid": spender[0],
            "vin": spender[1],
            "status": self.status_json(self.chain.txs[spender[0]]),
        }

    # ------------------------------------------------------------------ HTTP

    def _starlette(self, lagging: bool) -> Starlette:
        routes = [
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
            *control_routes(self, lagging=lagging),
        ]
        return Starlette(routes=routes)

    def _valid_address(self, address: str) -> bool:
        try:
            script = address_to_scriptpubkey(address)
            return bool(script.address(self.chain.network) == address)
        except Exception:
            return False

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
        return JSONResponse(self.chain.fee_estimates)

    async def _h_tx(self, request: Request) -> Response:
        tx = self.visible(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse(self.tx_json(tx))

    async def _h_tx_status(self, request: Request) -> Response:
        tx = self.visible(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse(self.status_json(tx))

    async def _h_tx_hex(self, request: Request) -> Response:
        tx = self.visible(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return PlainTextResponse(tx.raw.hex())

    async def _h_outspend(self, request: Request) -> Response:
        tx = self.visible(request.path_params["txid"])
        vout: int = request.path_params["vout"]
        if tx is None or vout >= len(tx.vout):
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse(self.outspend_json(tx.txid, vout))

    async def _h_outspends(self, request: Request) -> Response:
        tx = self.visible(request.path_params["txid"])
        if tx is None:
            return PlainTextResponse("Transaction not found", status_code=404)
        return JSONResponse([self.outspend_json(tx.txid, n) for n in range(len(tx.vout))])

    async def _h_post_tx(self, request: Request) -> Response:
        body = (await request.body()).decode(errors="replace").strip()
        try:
            txid = self.chain.broadcast(body)
        except BroadcastRejected as exc:
            return PlainTextResponse(exc.body(), status_code=400)
        return PlainTextResponse(txid)

    async def _h_tip_height(self, request: Request) -> Response:
        return PlainTextResponse(str(self.tip))

    async def _h_tip_hash(self, request: Request) -> Response:
        return PlainTextResponse(self.chain._block(self.tip).hash)


def _out_json(o: Output) -> dict[str, Any]:
    return {
        "scriptpubkey": o.script.hex(),
        "scriptpubkey_asm": "",
        "scriptpubkey_type": o.type,
        "scriptpubkey_address": o.address,
        "value": o.value,
    }
