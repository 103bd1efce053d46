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
    "DATABASE_URL": "postgresql+asyncpg://icy@db.invalid/icy",
    "BTC_PAYOUT_MAX_SATS": "5000000",
    "BTC_PAYOUT_DAILY_LIMIT_SATS": "50000000",
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


# ---- prod refusals and contradictions (SPEC §2): each stops startup with one line naming the variable ----------


def _only_line(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        load(env)
    assert len(info.value.lines) == 1, info.value.lines
    return info.value.lines[0]


def test_prod_settings_of_the_fixture_are_accepted() -> None:
    s = load(PROD_ENV)
    assert s.BTC_PAYOUT_MAX_SATS == 5_000_000
    assert s.BTC_PAYOUT_DAILY_LIMIT_SATS == 50_000_000


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///./icy_backend.sqlite3", "sqlite+aiosqlite:///:memory:", "SQLite:///x.db"]
)
def test_prod_refuses_sqlite(url: str) -> None:
    line = _only_line({**PROD_ENV, "DATABASE_URL": url})
    assert line.startswith("DATABASE_URL:")
    assert "PostgreSQL" in line
    assert url not in line  # the value is never echoed (a URL may hold a password)


def test_prod_refuses_the_sqlite_default_when_no_database_is_configured() -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != "DATABASE_URL"}
    assert _only_line(env).startswith("DATABASE_URL")
    # DB_* parts build a PostgreSQL URL: accepted.
    assert load({**env, "DB_HOST": "db", "DB_USER": "u", "DB_NAME": "icy"}).database_url.startswith("postgresql")


def test_sqlite_stays_fine_outside_prod() -> None:
    for app_env in ("local", "test", "dev", "staging"):
        assert load({"APP_ENV": app_env}).database_url.startswith("sqlite")


@pytest.mark.parametrize("name", ["BTC_PAYOUT_MAX_SATS", "BTC_PAYOUT_DAILY_LIMIT_SATS"])
def test_prod_requires_both_payout_limits(name: str) -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != name}
    assert _only_line(env) == f"{name}: required in prod"


def test_payout_limits_stay_unlimited_outside_prod() -> None:
    s = load({"APP_ENV": "staging"})
    assert s.BTC_PAYOUT_MAX_SATS is None
    assert s.BTC_PAYOUT_DAILY_LIMIT_SATS is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"JOB_STALL_AFTER": "10m"}, "INDEXER_TIMEOUT"),  # equal to the indexer timeout, below the processor one
        ({"JOB_STALL_AFTER": "15m"}, "INDEXER_TIMEOUT and PROCESSOR_TIMEOUT"),
        ({"JOB_STALL_AFTER": "16m", "INDEXER_TIMEOUT": "20m"}, "PROCESSOR_TIMEOUT"),
        ({"JOB_STALL_AFTER": "60s", "INDEXER_TIMEOUT": "30s"}, "INDEXER_TIMEOUT"),
    ],
)
def test_stall_detection_must_fire_before_the_timeouts(env: dict[str, str], names: str) -> None:
    line = _only_line(env)
    assert line.startswith("JOB_STALL_AFTER: must be below " + names + " ")


def test_stall_after_below_both_timeouts_is_fine() -> None:
    s = load({"JOB_STALL_AFTER": "599", "INDEXER_TIMEOUT": "10m"})
    assert s.JOB_STALL_AFTER == 599.0


@pytest.mark.parametrize("value", ["0", "-1"])
def test_blockchain_confirmations_below_one_stops_startup(value: str) -> None:
    assert _only_line({"BLOCKCHAIN_CONFIRMATIONS": value}).startswith("BLOCKCHAIN_CONFIRMATIONS:")
    assert load({"BLOCKCHAIN_CONFIRMATIONS": "1"}).BLOCKCHAIN_CONFIRMATIONS == 1


def test_min_icy_swap_amount_zero_stops_startup() -> None:
    assert _only_line({"MIN_ICY_SWAP_AMOUNT": "0"}).startswith("MIN_ICY_SWAP_AMOUNT:")


def test_payout_cap_above_the_daily_limit_stops_startup() -> None:
    line = _only_line({**PROD_ENV, "BTC_PAYOUT_MAX_SATS": "60000000", "BTC_PAYOUT_DAILY_LIMIT_SATS": "50000000"})
    assert line.startswith("BTC_PAYOUT_MAX_SATS: must not exceed BTC_PAYOUT_DAILY_LIMIT_SATS")
    # equal is fine: such a payout fits an empty window
    assert load({**PROD_ENV, "BTC_PAYOUT_MAX_SATS": "50000000"}).BTC_PAYOUT_MAX_SATS == 50_000_000


def test_a_daily_limit_without_a_cap_stops_startup_outside_prod_too() -> None:
    line = _only_line({"APP_ENV": "dev", "BTC_PAYOUT_DAILY_LIMIT_SATS": "1000000"})
    assert line.startswith("BTC_PAYOUT_MAX_SATS: required when BTC_PAYOUT_DAILY_LIMIT_SATS is set")
    assert load({"APP_ENV": "dev", "BTC_PAYOUT_MAX_SATS": "1000"}).BTC_PAYOUT_DAILY_LIMIT_SATS is None


@pytest.mark.parametrize("value", ["0", "0.005"])
def test_price_tolerance_below_the_signature_margin_stops_startup(value: str) -> None:
    assert _only_line({"SWAP_PRICE_TOLERANCE": value}).startswith("SWAP_PRICE_TOLERANCE: must be at least 0.01")
    assert load({"SWAP_PRICE_TOLERANCE": "0.01"}).SWAP_PRICE_TOLERANCE == Decimal("0.01")


@pytest.mark.parametrize("name", ["BTC_PAYOUT_MAX_SATS", "BTC_PAYOUT_DAILY_LIMIT_SATS"])
def test_payout_limits_must_be_positive(name: str) -> None:
    assert _only_line({**PROD_ENV, name: "0"}).startswith(f"{name}:")


def test_every_problem_gets_its_own_line() -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != "API_KEY"}
    with pytest.raises(SettingsError) as info:
        load({**env, "DATABASE_URL": "sqlite:///x", "JOB_STALL_AFTER": "1h", "SWAP_PRICE_TOLERANCE": "0"})
    names = sorted(line.split(":")[0] for line in info.value.lines)
    assert names == ["API_KEY", "DATABASE_URL", "JOB_STALL_AFTER", "SWAP_PRICE_TOLERANCE"]
