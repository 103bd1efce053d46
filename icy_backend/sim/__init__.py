"""Chain simulators speaking the real wire formats (SPEC §11), for tests and sandbox mode.

* `esplora.EsploraSim` — Esplora REST over an in-memory UTXO set/mempool (`esplora_chain.EsploraChain`).
* `evm.EvmSim` — Base-like JSON-RPC with the ICY token and swap contract (`evm_chain.EvmChain`,
  raw swap transactions in `evm_swap`, encodings in `abi`).
* `prices.PriceSim` (CoinGecko `simple/price`) and `mochi.MochiSim` (Mochi Pay circulated ICY).
* `faults` — `Fault`, `FaultSet`, `FaultInjector`: every simulator's `.app` is wrapped, `.faults` is its set.
* `combined.Simulators` — all four under `/esplora`, `/evm`, `/coingecko`, `/mochi`, demo seed and ticker.
* `serve.run_simulate` — the `icy-backend simulate` server; `btc_wallet.P2wpkhKey` signs test spends.
"""
