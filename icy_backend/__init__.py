"""icy-backend: the ICY <-> BTC swap service."""

__version__ = "0.1.0"
