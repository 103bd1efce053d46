"""Chain simulators speaking the real wire formats (Esplora, EVM JSON-RPC, CoinGecko, Mochi Pay)."""
