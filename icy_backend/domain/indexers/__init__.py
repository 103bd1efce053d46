"""Chain indexers: BTC treasury history, ICY transfers and Swap events (SPEC §9)."""
