"""hypercorn.toml: hypercorn ignores unknown keys silently, so every key and the values we rely on are checked."""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
from hypercorn.config import Config

from icy_backend.cli import hypercorn_config
from icy_backend.settings import load_settings

TOML = Path(__file__).resolve().parents[3] / "hypercorn.toml"


def test_every_key_is_a_hypercorn_setting() -> None:
    keys = tomllib.loads(TOML.read_text()).keys()
    known = {name for name in dir(Config) if not name.startswith("_")}
    unknown = sorted(set(keys) - known)
    assert unknown == [], f"hypercorn would silently ignore: {unknown}"


def test_the_values_we_rely_on() -> None:
    config = Config.from_toml(TOML)
    assert config.workers == 0  # one process: SIGTERM drains it; scale with replicas
    assert config.worker_class == "asyncio"
    assert "h2" in config.alpn_protocols and "http/1.1" in config.alpn_protocols
    assert 0 < config.graceful_timeout < 30  # below Kubernetes' default terminationGracePeriodSeconds
    assert config.shutdown_timeout >= load_settings({}, env_file=None).SHUTDOWN_GRACE_SECONDS
    assert config.accesslog is None  # no client addresses or query strings in the logs
    # Idle connections outlive the clients' pool expiry (httpx's default, load balancers' 60 s idle timeout):
    # equal timeouts race, and the client sends a request on a connection the server is closing.
    assert config.keep_alive_timeout > max(httpx.Limits().keepalive_expiry or 0, 60)


def test_port_and_host_override_bind() -> None:
    settings = load_settings({"PORT": "9123", "HOST": "127.0.0.1"}, env_file=None)
    config = hypercorn_config(settings, TOML)
    assert config.bind == ["127.0.0.1:9123"]  # type: ignore[attr-defined]
    v6 = hypercorn_config(load_settings({"HOST": "::1"}, env_file=None), TOML)
    assert v6.bind == ["[::1]:8080"]  # type: ignore[attr-defined]
