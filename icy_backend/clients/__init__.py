"""Outbound clients: Esplora, EVM JSON-RPC, prices, Mochi Pay, uptime webhooks."""
