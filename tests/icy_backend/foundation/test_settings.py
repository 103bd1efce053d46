"""Settings: defaults, validation with one line per problem, *_FILE secrets, prod requirements."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from icy_backend.settings import SettingsError, load_settings, merge_endpoints, parse_duration

PROD_ENV = {
    "APP_ENV": "prod",
    "API_KEY": "k" * 16,
    # A throwaway mainnet key (sha256 of a test phrase) and its P2WPKH address: never fund it.
    "BTC_WALLET_WIF": "L1sbGZmMNg9uYwTvBnxBXMdGz3sjdwkj43pdDhWiUL9gGFMVN7jn",
    "BLOCKCHAIN_BTC_TREASURY_ADDRESS": "bc1quanz2nkpcneq2rldlpca8wnq0ty37h5hyxnq2n",
    "BLOCKCHAIN_ICY_CONTRACT_ADDR": "0x" + "11" * 20,
    "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR": "0x" + "22" * 20,
    "BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY": "0x" + "33" * 32,
    "BTC_BLOCKSTREAM_API_URL": "https://esplora.invalid/api",
    "BLOCKCHAIN_BASE_RPC_ENDPOINT": "https://rpc.invalid",
    "BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH": "0x" + "44" * 32,
}


def load(env: dict[str, str]):  # type: ignore[no-untyped-def]
    return load_settings(env, env_file=None)


def test_defaults_in_local() -> None:
    s = load({})
    assert s.APP_ENV == "local"
    assert s.PORT == 8080
    assert s.INDEX_INTERVAL == 120.0
    assert s.btc_network == "testnet"
    assert s.chain_id == 84532
    assert s.allowed_origins == ["*"]
    assert s.BTC_SERVICE_FEE_PERCENTAGE == Decimal("0.01")
    assert s.MIN_ICY_SWAP_AMOUNT == 2 * 10**18
    assert s.database_url.startswith("sqlite+aiosqlite")
    assert s.log_format == "console"


def test_prod_defaults_mainnet_and_json_logs() -> None:
    s = load(PROD_ENV)
    assert s.btc_network == "mainnet"
    assert s.chain_id == 8453
    assert s.log_format == "json"
    assert s.allowed_origins == []


def test_production_is_an_alias_of_prod_for_network_too() -> None:
    # fix: the old service enforced auth for "production" but used testnet for it
    s = load({**PROD_ENV, "APP_ENV": "production"})
    assert s.is_prod
    assert s.btc_network == "mainnet"


@pytest.mark.parametrize("value", ["2x", "abc", "-5s", "0"])
def test_bad_index_interval_stops_startup(value: str) -> None:
    # fix: a bad INDEX_INTERVAL used to silently disable every job
    with pytest.raises(SettingsError) as info:
        load({"INDEX_INTERVAL": value})
    assert len(info.value.lines) == 1
    assert info.value.lines[0].startswith("INDEX_INTERVAL:")


@pytest.mark.parametrize(("value", "seconds"), [("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("45", 45.0)])
def test_index_interval_formats(value: str, seconds: float) -> None:
    assert load({"INDEX_INTERVAL": value}).INDEX_INTERVAL == seconds
    assert parse_duration(value) == seconds


def test_bad_block_number_is_a_clear_error_not_a_panic() -> None:
    with pytest.raises(SettingsError) as info:
        load({"BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER": "12ab"})
    assert info.value.lines[0].startswith("BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER:")


def test_one_line_per_problem() -> None:
    with pytest.raises(SettingsError) as info:
        load({"PORT": "http", "INDEX_INTERVAL": "soon", "BTC_NETWORK": "moon"})
    names = sorted(line.split(":")[0] for line in info.value.lines)
    assert names == ["BTC_NETWORK", "INDEX_INTERVAL", "PORT"]


def test_prod_without_api_key_stops_startup() -> None:
    env = dict(PROD_ENV)
    del env["API_KEY"]
    with pytest.raises(SettingsError) as info:
        load(env)
    assert "API_KEY" in str(info.value)


def test_prod_requires_chain_settings() -> None:
    with pytest.raises(SettingsError) as info:
        load({"APP_ENV": "prod", "API_KEY": "x" * 10})
    text = str(info.value)
    for name in (
        "BTC_WALLET_WIF",
        "BLOCKCHAIN_ICY_CONTRACT_ADDR",
        "BTC_BLOCKSTREAM_API_URL",
        "BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH",
    ):
        assert name in text


def test_errors_never_echo_secret_values() -> None:
    secret = "SECRET-TOKEN-VALUE-123"
    with pytest.raises(SettingsError) as info:
        load({"PORT": secret, "API_KEY": secret})
    assert secret not in str(info.value)


def test_file_secret(tmp_path: Path) -> None:
    path = tmp_path / "api_key"
    path.write_text("from-a-file\n")
    s = load({"API_KEY_FILE": str(path)})
    assert s.API_KEY is not None
    assert s.API_KEY.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(s)


def test_missing_file_secret_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load({"API_KEY_FILE": str(tmp_path / "absent")})
    assert info.value.lines[0].startswith("API_KEY_FILE:")


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("INDEX_INTERVAL=30s\nPORT=9999\n")
    s = load_settings({"PORT": "7000"}, env_file=str(env_file))
    assert s.INDEX_INTERVAL == 30.0
    assert s.PORT == 7000  # the environment wins over the file


def test_empty_allowed_origins_means_no_cors_not_a_crash() -> None:
    s = load({"APP_ENV": "dev", "ALLOWED_ORIGINS": ""})
    assert s.allowed_origins == []
    s = load({"APP_ENV": "dev", "ALLOWED_ORIGINS": "https://a.example;https://b.example"})
    assert s.allowed_origins == ["https://a.example", "https://b.example"]


def test_endpoint_lists_put_the_single_url_first() -> None:
    assert merge_endpoints("https://a", "https://b, https://a ,https://c") == [
        "https://a",
        "https://b",
        "https://c",
    ]
    s = load({"BLOCKCHAIN_BASE_RPC_ENDPOINTS": "https://x,https://y"})
    assert s.base_rpc_endpoints == ["https://x", "https://y"]


def test_db_parts_build_a_postgres_url() -> None:
    s = load({"DB_HOST": "db", "DB_USER": "u", "DB_PASS": "p@ss", "DB_NAME": "icy", "DB_PORT": "5433"})
    assert s.database_url == "postgresql+asyncpg://u:p%40ss@db:5433/icy"


def test_breaker_overrides() -> None:
    s = load({"CB_BASE_RPC_THRESHOLD": "9", "CB_BASE_RPC_TTL_SECONDS": "7.5"})
    b = s.breaker("base_rpc")
    assert (b.threshold, b.ttl_seconds, b.half_open_calls) == (9, 7.5, 1)
    d = s.breaker("blockstream_api")
    assert (d.threshold, d.ttl_seconds) == (3, 60.0)


def test_money_settings_reject_floats_in_wei() -> None:
    with pytest.raises(SettingsError):
        load({"MIN_ICY_SWAP_AMOUNT": "2e18"})
    assert load({"MIN_ICY_SWAP_AMOUNT": "50000000000000000000"}).MIN_ICY_SWAP_AMOUNT == 50 * 10**18


def test_sandbox_only_in_local_without_endpoints() -> None:
    assert load({}).sandbox_enabled
    assert not load({"BTC_BLOCKSTREAM_API_URL": "https://e"}).sandbox_enabled
    assert not load({"APP_ENV": "dev"}).sandbox_enabled
