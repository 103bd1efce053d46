"""Service configuration from the environment (SPEC §2).

Old variable names are kept. Secrets are ``SecretStr`` and may be given as ``NAME_FILE=/path``. A bad value stops
startup with one line per problem naming the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AppEnv = Literal["local", "test", "dev", "staging", "prod"]
BtcNetwork = Literal["mainnet", "testnet", "signet", "regtest"]

# generate-signature signs a btc_amount up to 1 % above the value of icy_amount at the ratio (SPEC §9).
SIGNATURE_PRICE_MARGIN = Decimal("0.01")
# Marks a model-level error whose message is ``NAME: why`` lines (split into one line per problem on load).
_PROBLEMS_MARK = "problems:\n"

SECRET_NAMES = ("API_KEY", "BTC_WALLET_WIF", "BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY", "METRICS_TOKEN", "DB_PASS")

JOB_WEBHOOK_ENV = {
    "btc_transaction_indexing": "INDEX_BTC_TRANSACTION_UPTIME_WEBHOOK_URL",
    "icy_transaction_indexing": "INDEX_ICY_TRANSACTION_UPTIME_WEBHOOK_URL",
    "icy_swap_transaction_indexing": "INDEX_ICY_SWAP_TRANSACTION_UPTIME_WEBHOOK_URL",
    "swap_request_processing": "PROCESS_SWAP_REQUESTS_UPTIME_WEBHOOK_URL",
    "btc_pending_transaction_processing": "PROCESS_PENDING_BTC_TRANSACTIONS_UPTIME_WEBHOOK_URL",
}

BREAKER_SERVICES = ("blockstream_api", "base_rpc", "coingecko", "mochi_pay")
BREAKER_DEFAULTS: dict[str, tuple[int, float]] = {
    "blockstream_api": (3, 60.0),
    "base_rpc": (5, 120.0),
    "coingecko": (3, 60.0),
    "mochi_pay": (3, 60.0),
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float | int) -> float:
    """Parse ``30s``, ``2m``, ``1h``, ``500ms`` or plain seconds into seconds (> 0)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError("must be a duration such as 30s, 2m, 1h or a number of seconds")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _split(value: str | None, sep: str) -> list[str]:
    if not value:
        return []
    return [part.strip() for part in value.split(sep) if part.strip()]


def merge_endpoints(primary: str | None, listed: str | None) -> list[str]:
    """The old rule: the list is comma-separated and the single URL is put first (once)."""
    urls = _split(listed, ",")
    if primary and primary.strip():
        first = primary.strip()
        urls = [first, *[u for u in urls if u != first]]
    return [u.rstrip("/") for u in urls]


class BreakerSettings:
    """Per-service breaker settings (threshold, ttl, half-open trial calls)."""

    def __init__(self, threshold: int, ttl_seconds: float, half_open_calls: int) -> None:
        self.threshold = threshold
        self.ttl_seconds = ttl_seconds
        self.half_open_calls = half_open_calls

    def __repr__(self) -> str:
        return f"BreakerSettings({self.threshold}, {self.ttl_seconds}, {self.half_open_calls})"


class Settings(BaseSettings):
    """Every variable of SPEC §2. Build it with :func:`load_settings` to get readable errors."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        populate_by_name=True,
        validate_default=True,
    )

    APP_ENV: AppEnv = "local"
    PORT: int = Field(8080, ge=1, le=65535)
    HOST: str = "0.0.0.0"

    DATABASE_URL: str | None = None
    DB_HOST: str | None = None
    DB_PORT: int = Field(5432, ge=1, le=65535)
    DB_USER: str | None = None
    DB_PASS: SecretStr | None = None
    DB_NAME: str | None = None
    DB_SSL_MODE: str | None = None
    DB_POOL_SIZE: int = Field(10, ge=1)
    DB_MAX_OVERFLOW: int = Field(5, ge=0)
    DB_CONNECT_TIMEOUT_SECONDS: float = Field(3.0, gt=0)

    API_KEY: SecretStr | None = None
    ALLOWED_ORIGINS: str | None = None

    BTC_NETWORK: BtcNetwork | None = None
    BTC_BLOCKSTREAM_API_URL: str | None = None
    BTC_BLOCKSTREAM_API_URLS: str | None = None
    BTC_WALLET_WIF: SecretStr | None = None
    BLOCKCHAIN_BTC_TREASURY_ADDRESS: str | None = None
    BTC_SERVICE_FEE_PERCENTAGE: Decimal = Field(Decimal("0.01"), ge=0, lt=1)
    BTC_MIN_SATOSHI_FEE: int = Field(3000, ge=0)
    BTC_MAX_TX_FEE_USD: Decimal = Field(Decimal("1.0"), gt=0)
    # Payouts that finish (SPEC §9): confirmations before ``completed``, the fee-estimate target, fee bumps.
    BTC_PAYOUT_CONFIRMATIONS: int = Field(1, ge=1)
    BTC_PAYOUT_CONF_TARGET: int = Field(6, ge=1)
    BTC_PAYOUT_BUMP_AFTER_BLOCKS: int = Field(3, ge=1)
    # Treasury guards: unlimited (None) outside prod, required in prod.
    BTC_PAYOUT_MAX_SATS: int | None = Field(None, gt=0)
    BTC_PAYOUT_DAILY_LIMIT_SATS: int | None = Field(None, gt=0)
    SWAP_PRICE_TOLERANCE: Decimal = Field(Decimal("0.05"), ge=0)
    MOCHI_MAX_AGE: float = 3600.0

    BLOCKCHAIN_BASE_RPC_ENDPOINT: str | None = None
    BLOCKCHAIN_BASE_RPC_ENDPOINTS: str | None = None
    BLOCKCHAIN_CHAIN_ID: int | None = Field(None, gt=0)
    BLOCKCHAIN_ICY_CONTRACT_ADDR: str | None = None
    BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR: str | None = None
    BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH: str | None = None
    BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER: int = Field(0, ge=0)
    BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY: SecretStr | None = None
    BLOCKCHAIN_LOG_CHUNK_BLOCKS: int = Field(2000, ge=1)
    # At least 1: a node's head block is the one most likely to be replaced (SPEC §2 contradictions).
    BLOCKCHAIN_CONFIRMATIONS: int = Field(3, ge=1)
    BLOCKCHAIN_FINALITY_TAG: Literal["safe", "finalized"] | None = None
    BLOCKCHAIN_REORG_DEPTH_MAX: int = Field(64, ge=1)

    METRICS_TOKEN: SecretStr | None = None
    UPTIME_WEBHOOK_FAIL_SUFFIX: bool = False
    MIN_ICY_SWAP_AMOUNT: int = Field(2_000_000_000_000_000_000, ge=1)
    MOCHI_PAY_API_URL: str | None = None
    COINGECKO_API_URL: str = "https://api.coingecko.com/api/v3"

    INDEX_INTERVAL: float = 120.0
    INDEXER_TIMEOUT: float = 600.0
    PROCESSOR_TIMEOUT: float = 900.0
    JOB_STALL_AFTER: float = 60.0
    JOB_FIRST_RUN_DELAY: float = 5.0
    # Job unwind and final uptime pings after SIGTERM's drain (part of the shutdown budget, SPEC §8).
    SHUTDOWN_GRACE_SECONDS: float = Field(10.0, gt=0)
    # Business requests in flight beyond this are refused at once with 503 ``overloaded`` (SPEC §5).
    MAX_CONCURRENT_REQUESTS: int = Field(64, ge=1)
    UPTIME_WEBHOOK_START: bool = False
    # After SIGTERM, keep serving (with /readyz 503) this long before closing the listener.
    SHUTDOWN_DRAIN_DELAY_SECONDS: float = Field(0.0, ge=0, le=60)

    INDEX_BTC_TRANSACTION_UPTIME_WEBHOOK_URL: SecretStr | None = None
    INDEX_ICY_TRANSACTION_UPTIME_WEBHOOK_URL: SecretStr | None = None
    INDEX_ICY_SWAP_TRANSACTION_UPTIME_WEBHOOK_URL: SecretStr | None = None
    PROCESS_SWAP_REQUESTS_UPTIME_WEBHOOK_URL: SecretStr | None = None
    PROCESS_PENDING_BTC_TRANSACTIONS_UPTIME_WEBHOOK_URL: SecretStr | None = None

    CB_BLOCKSTREAM_API_THRESHOLD: int = Field(3, ge=1)
    CB_BLOCKSTREAM_API_TTL_SECONDS: float = Field(60.0, gt=0)
    CB_BLOCKSTREAM_API_HALF_OPEN_CALLS: int = Field(1, ge=1)
    CB_BASE_RPC_THRESHOLD: int = Field(5, ge=1)
    CB_BASE_RPC_TTL_SECONDS: float = Field(120.0, gt=0)
    CB_BASE_RPC_HALF_OPEN_CALLS: int = Field(1, ge=1)
    CB_COINGECKO_THRESHOLD: int = Field(3, ge=1)
    CB_COINGECKO_TTL_SECONDS: float = Field(60.0, gt=0)
    CB_COINGECKO_HALF_OPEN_CALLS: int = Field(1, ge=1)
    CB_MOCHI_PAY_THRESHOLD: int = Field(3, ge=1)
    CB_MOCHI_PAY_TTL_SECONDS: float = Field(60.0, gt=0)
    CB_MOCHI_PAY_HALF_OPEN_CALLS: int = Field(1, ge=1)

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    LOG_FORMAT: Literal["json", "console"] | None = None

    # Sandbox mode (SPEC §3): "auto" runs the simulators in-process in local when no endpoint is configured.
    SANDBOX: Literal["auto", "on", "off"] = "auto"
    SANDBOX_BLOCK_TIME: float = Field(5.0, gt=0)

    @field_validator("APP_ENV", mode="before")
    @classmethod
    def _alias_production(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value == "production":
                return "prod"
        return value

    @field_validator(
        "INDEX_INTERVAL", "INDEXER_TIMEOUT", "PROCESSOR_TIMEOUT", "JOB_STALL_AFTER", "MOCHI_MAX_AGE", mode="before"
    )
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("JOB_FIRST_RUN_DELAY", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> float:
        if isinstance(value, str) and value.strip() in {"0", "0s"}:
            return 0.0
        if isinstance(value, int | float) and value == 0:
            return 0.0
        return parse_duration(value)

    @field_validator("BTC_SERVICE_FEE_PERCENTAGE", "BTC_MAX_TX_FEE_USD", "SWAP_PRICE_TOLERANCE", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError("must be a decimal string")
        if isinstance(value, str):
            try:
                return Decimal(value.strip())
            except InvalidOperation as exc:
                raise ValueError("must be a decimal number") from exc
        return value

    @field_validator("MIN_ICY_SWAP_AMOUNT", mode="before")
    @classmethod
    def _wei(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text.isdigit():
                raise ValueError("must be a non-negative integer amount in wei")
            return int(text)
        return value

    @field_validator("BLOCKCHAIN_ICY_CONTRACT_ADDR", "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR", mode="after")
    @classmethod
    def _evm_address(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            raise ValueError("must be a 0x-prefixed 20-byte hex address")
        return value

    @field_validator("BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH", mode="after")
    @classmethod
    def _tx_hash(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"0x[0-9a-fA-F]{64}", value):
            raise ValueError("must be a 0x-prefixed 32-byte hex transaction hash")
        return value.lower()

    @field_validator("BLOCKCHAIN_FINALITY_TAG", mode="before")
    @classmethod
    def _finality_tag(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value

    @field_validator("ALLOWED_ORIGINS", mode="after")
    @classmethod
    def _origins(cls, value: str | None) -> str | None:
        return value.strip() if value else None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Prod requirements and settings that contradict each other: one ``NAME: why`` line per problem."""
        problems = [*self._prod_problems(), *self._contradictions()]
        if problems:
            raise ValueError(_PROBLEMS_MARK + "\n".join(problems))
        return self

    def _prod_problems(self) -> list[str]:
        if self.APP_ENV != "prod":
            return []
        missing = [
            name
            for name in (
                "API_KEY",
                "BTC_WALLET_WIF",
                "BLOCKCHAIN_BTC_TREASURY_ADDRESS",
                "BLOCKCHAIN_ICY_CONTRACT_ADDR",
                "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR",
                "BLOCKCHAIN_SWAP_SIGNER_PRIVATE_KEY",
                # Without a start point the ICY indexer would scan mainnet from block 0.
                "BLOCKCHAIN_INITIAL_ICY_TRANSACTION_HASH",
                # Treasury guards: a cap per payout and a rolling 24 h cap on what leaves the wallet.
                "BTC_PAYOUT_MAX_SATS",
                "BTC_PAYOUT_DAILY_LIMIT_SATS",
            )
            if not _present(getattr(self, name))
        ]
        if not self.btc_endpoints:
            missing.append("BTC_BLOCKSTREAM_API_URL")
        if not self.base_rpc_endpoints:
            missing.append("BLOCKCHAIN_BASE_RPC_ENDPOINT")
        problems = [f"{name}: required in prod" for name in missing]
        if _is_sqlite(self.database_url):
            # Exactly-once payouts and the job leader rely on one shared PostgreSQL database; two replicas on
            # SQLite would each have their own queue and pay every swap twice.
            name = "DATABASE_URL" if self.DATABASE_URL else "DATABASE_URL (or DB_HOST)"
            problems.append(f"{name}: prod needs PostgreSQL; SQLite is refused (every replica must share one database)")
        return problems

    def _contradictions(self) -> list[str]:
        problems: list[str] = []
        timeouts = {"INDEXER_TIMEOUT": self.INDEXER_TIMEOUT, "PROCESSOR_TIMEOUT": self.PROCESSOR_TIMEOUT}
        not_below = [name for name, seconds in timeouts.items() if self.JOB_STALL_AFTER >= seconds]
        if not_below:
            problems.append(
                f"JOB_STALL_AFTER: must be below {' and '.join(not_below)} (a job would time out before it is ever "
                "seen stalled: stall detection would be off)"
            )
        max_sats, daily = self.BTC_PAYOUT_MAX_SATS, self.BTC_PAYOUT_DAILY_LIMIT_SATS
        if daily is not None and max_sats is None and not self.is_prod:  # prod reports it as required
            problems.append(
                "BTC_PAYOUT_MAX_SATS: required when BTC_PAYOUT_DAILY_LIMIT_SATS is set (a payout above the daily "
                "limit would wait forever instead of being held for a person)"
            )
        elif daily is not None and max_sats is not None and max_sats > daily:
            problems.append(
                "BTC_PAYOUT_MAX_SATS: must not exceed BTC_PAYOUT_DAILY_LIMIT_SATS (a payout between the two would "
                "not be held and could never fit in the daily window)"
            )
        if self.SWAP_PRICE_TOLERANCE < SIGNATURE_PRICE_MARGIN:
            problems.append(
                f"SWAP_PRICE_TOLERANCE: must be at least {SIGNATURE_PRICE_MARGIN} (the signature endpoint signs up "
                "to 1 % above the ratio, so a lower tolerance holds swaps the service itself signed)"
            )
        return problems

    # ---- derived values -------------------------------------------------------------------------------

    @property
    def is_prod(self) -> bool:
        return self.APP_ENV == "prod"

    @property
    def btc_network(self) -> BtcNetwork:
        if self.BTC_NETWORK:
            return self.BTC_NETWORK
        return "mainnet" if self.is_prod else "testnet"

    @property
    def chain_id(self) -> int:
        if self.BLOCKCHAIN_CHAIN_ID:
            return self.BLOCKCHAIN_CHAIN_ID
        return 8453 if self.is_prod else 84532

    @property
    def btc_endpoints(self) -> list[str]:
        return merge_endpoints(self.BTC_BLOCKSTREAM_API_URL, self.BTC_BLOCKSTREAM_API_URLS)

    @property
    def base_rpc_endpoints(self) -> list[str]:
        return merge_endpoints(self.BLOCKCHAIN_BASE_RPC_ENDPOINT, self.BLOCKCHAIN_BASE_RPC_ENDPOINTS)

    @property
    def allowed_origins(self) -> list[str]:
        if self.ALLOWED_ORIGINS is None:
            return ["*"] if self.APP_ENV == "local" else []
        return _split(self.ALLOWED_ORIGINS, ";")

    @property
    def log_format(self) -> Literal["json", "console"]:
        if self.LOG_FORMAT:
            return self.LOG_FORMAT
        return "json" if self.is_prod else "console"

    @property
    def database_url(self) -> str:
        if self.DATABASE_URL:
            return self.DATABASE_URL
        if self.DB_HOST:
            from sqlalchemy.engine import URL

            query = {"ssl": self.DB_SSL_MODE} if self.DB_SSL_MODE and self.DB_SSL_MODE != "disable" else {}
            return URL.create(
                "postgresql+asyncpg",
                username=self.DB_USER,
                password=self.DB_PASS.get_secret_value() if self.DB_PASS else None,
                host=self.DB_HOST,
                port=self.DB_PORT,
                database=self.DB_NAME,
                query=query,
            ).render_as_string(hide_password=False)
        return "sqlite+aiosqlite:///./icy_backend.sqlite3"

    @property
    def sandbox_enabled(self) -> bool:
        """Run the simulators in-process: only in ``local``, and only when no chain endpoint is configured."""
        if self.SANDBOX == "off":
            return False
        if self.SANDBOX == "on":
            return self.APP_ENV in ("local", "test")
        return self.APP_ENV == "local" and not self.btc_endpoints and not self.base_rpc_endpoints

    def breaker(self, service: str) -> BreakerSettings:
        prefix = f"CB_{service.upper()}_"
        return BreakerSettings(
            threshold=getattr(self, prefix + "THRESHOLD"),
            ttl_seconds=getattr(self, prefix + "TTL_SECONDS"),
            half_open_calls=getattr(self, prefix + "HALF_OPEN_CALLS"),
        )

    def webhook_url(self, job_name: str) -> str | None:
        secret = getattr(self, JOB_WEBHOOK_ENV[job_name])
        return secret.get_secret_value() if secret else None

    def secret_values(self) -> list[str]:
        """Every configured secret value (for log redaction and the secrets sweep)."""
        values: list[str] = []
        for name in (*SECRET_NAMES, *JOB_WEBHOOK_ENV.values()):
            secret = getattr(self, name, None)
            if isinstance(secret, SecretStr) and secret.get_secret_value():
                values.append(secret.get_secret_value())
        return values


def _is_sqlite(url: str) -> bool:
    return url.strip().lower().startswith("sqlite")


def _present(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


class SettingsError(Exception):
    """Raised with one line per bad or missing variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _file_secrets(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Resolve ``NAME_FILE=/path`` for every field (Docker/Kubernetes secret files)."""
    values: dict[str, str] = {}
    errors: list[str] = []
    for key, path in environ.items():
        if not key.endswith("_FILE"):
            continue
        name = key[: -len("_FILE")]
        if name not in Settings.model_fields:
            continue
        try:
            values[name] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            errors.append(f"{key}: cannot read secret file ({exc.strerror or 'unreadable'})")
    return values, errors


def load_settings(environ: dict[str, str] | None = None, *, env_file: str | None = ".env") -> Settings:
    """Build :class:`Settings` from ``environ`` (default: the process environment) plus ``.env``.

    Raises :class:`SettingsError` with one line per problem; values are never echoed (they may be secrets).
    """
    env = dict(os.environ if environ is None else environ)
    file_values, errors = _file_secrets(env)
    overrides: dict[str, Any] = {k: v for k, v in file_values.items() if k not in env or not env[k]}
    if errors:
        raise SettingsError(errors)
    try:
        if environ is None:
            return Settings(_env_file=env_file, **overrides)
        # An explicit environment (tests, tools) is the whole truth: the process environment is not read.
        values: dict[str, Any] = {}
        if env_file and Path(env_file).is_file():
            from dotenv import dotenv_values

            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update({k: v for k, v in env.items() if k in Settings.model_fields})
        values.update(overrides)
        return Settings.model_validate(values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            message = str(err["msg"])
            if not err["loc"] and _PROBLEMS_MARK in message:
                # Model-level problems already name their variable, one per line.
                lines.extend(message.split(_PROBLEMS_MARK, 1)[1].splitlines())
            else:
                lines.append(f"{loc}: {message}")
        raise SettingsError(lines) from None


__all__ = [
    "BREAKER_DEFAULTS",
    "BREAKER_SERVICES",
    "JOB_WEBHOOK_ENV",
    "BreakerSettings",
    "Settings",
    "SettingsError",
    "load_settings",
    "merge_endpoints",
    "parse_duration",
]
