"""What the Esplora node simulator's rules cost: broadcasts through ``POST /tx`` and the session re-verification.

    .venv/bin/python -m bench.esplora_sim                 # ~10 s
    .venv/bin/python -m bench.esplora_sim --txs 1000

Signs ``--txs`` two-input P2WPKH payments (embit, outside the timing), then times, in-process over ASGI:
``POST /tx`` of each (parse, BIP 125 / fee checks, two BIP-143 sighashes and libsecp256k1 verifications, mempool
insert), a block mining them, and ``tests/btc_verify.verify_tx`` (bitcoinlib) of each, the cost the test session
pays per transaction. One run; writes ``bench/results/esplora_sim.json``.
"""

from __future__ import annotations

import argparse
import time

import anyio
import httpx

from bench.record import record
from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim

WALLET = P2wpkhKey.from_seed(b"bench esplora wallet")
USER = P2wpkhKey.from_seed(b"bench esplora user")


async def run(count: int) -> dict[str, float]:
    sim = EsploraSim()
    raws: list[str] = []
    prevouts: list[list[tuple[int, str]]] = []
    for _ in range(count):
        a, b = sim.fund(WALLET.address, 60_000), sim.fund(WALLET.address, 40_000)
        script = sim.txs[a[0]].vout[0].script.hex()
        outputs = [(USER.address, 70_000), (WALLET.address, 28_000)]
        raws.append(WALLET.sign_spend([(*a, 60_000), (*b, 40_000)], outputs, sequence=0xFFFFFFFD))
        prevouts.append([(60_000, script), (40_000, script)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as client:
        started = time.perf_counter()
        for raw in raws:
            r = await client.post("/tx", content=raw)
            assert r.status_code == 200, r.text
        post_s = time.perf_counter() - started
    started = time.perf_counter()
    sim.mine()
    mine_s = time.perf_counter() - started
    assert len(sim.blocks[-1].txids) == count
    from tests.btc_verify import verify_tx

    started = time.perf_counter()
    for raw, prev in zip(raws, prevouts, strict=True):
        verify_tx(raw, prev)
    verify_s = time.perf_counter() - started
    return {
        "txs": count,
        "post_tx_per_second": round(count / post_s, 1),
        "post_tx_ms_mean": round(post_s * 1000 / count, 3),
        "mine_block_ms": round(mine_s * 1000, 2),
        "bitcoinlib_verify_ms_per_tx": round(verify_s * 1000 / count, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=500)
    args = parser.parse_args()
    results = anyio.run(run, args.txs)
    print(results)
    headline = (
        f"POST /tx with rules: {results['post_tx_per_second']:.0f} tx/s (2 inputs, ASGI); "
        f"independent re-verification {results['bitcoinlib_verify_ms_per_tx']:.1f} ms/tx"
    )
    record("esplora_sim", results, notes=f"{args.txs} two-input P2WPKH payments, in-process", headline=headline)


if __name__ == "__main__":
    main()
