"""The OpenAPI 3.1 document of every route of SPEC §4, hand-written (the routes are plain Starlette)."""

from __future__ import annotations

from typing import Any

from icy_backend import __version__
from icy_backend.db.tables import PAYOUT_STATUSES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _enveloped(data: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": [_ref("Envelope"), {"type": "object", "properties": {"data": data}}]}


_ERR = _json(_ref("Envelope"), "Error envelope (`error` is a short class, never a raw message)")
_INVALID = _json(_ref("ValidationError"), "Invalid request")
_UNAVAILABLE = _json(_ref("Envelope"), "An upstream or the database is unavailable (`error` names its class)")
_UNAUTHORIZED = _json(_ref("AuthError"), "Missing or invalid API key (prod only)")
_SECURED: list[dict[str, list[str]]] = [{"ApiKey": []}]


def _health(summary: str, ok: str) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["health"],
            "summary": summary,
            "responses": {
                "200": {
                    "description": ok,
                    "content": {
                        "application/json": {"schema": _ref("HealthResult")},
                        "application/health+json": {"schema": {"type": "object"}},
                    },
                },
                "503": {
                    "description": "Unhealthy",
                    "content": {"application/json": {"schema": _ref("HealthResult")}},
                },
            },
        }
    }


def _oracle(summary: str, decimal: int, operation_id: str) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["oracle"],
            "summary": summary,
            "operationId": operation_id,
            "security": _SECURED,
            "responses": {
                "200": _json(_enveloped(_ref("Amount")), f"Value with decimal = {decimal}"),
                "401": _UNAUTHORIZED,
                "503": _UNAVAILABLE,
            },
        }
    }


_STRING_INT = {"type": "string", "pattern": "^[0-9]+$"}

SCHEMAS: dict[str, Any] = {
    "Envelope": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {},
            "message": {"type": "string"},
            "error": {"type": "string"},
        },
    },
    "FieldError": {
        "type": "object",
        "required": ["field", "msg"],
        "properties": {"field": {"type": "string"}, "msg": {"type": "string"}},
    },
    "ValidationError": {
        "allOf": [
            _ref("Envelope"),
            {
                "type": "object",
                "properties": {"errors": {"type": "array", "items": _ref("FieldError")}},
            },
        ]
    },
    "AuthError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Amount": {
        "type": "object",
        "required": ["value", "decimal"],
        "properties": {
            "value": {**_STRING_INT, "description": "decimal integer string"},
            "decimal": {"type": "integer"},
        },
    },
    "SwapInfo": {
        "type": "object",
        "required": ["service_fee_rate", "min_satoshi_fee"],
        "properties": {
            "circulated_icy_balance": {**_STRING_INT, "description": "wei"},
            "satoshi_balance": {**_STRING_INT, "description": "sats"},
            "satoshi_per_usd": {"type": "number"},
            "satoshi_usd_rate": {"type": "string"},
            "icy_satoshi_rate": {"type": "string"},
            "icy_usd_rate": {"type": "string"},
            "min_icy_to_swap": {**_STRING_INT, "description": "wei"},
            "service_fee_rate": {"type": "number"},
            "min_satoshi_fee": _STRING_INT,
            "warnings": {"type": "array", "items": {"type": "string"}},
            "partial_data": {"type": "boolean"},
        },
    },
    "SignatureRequest": {
        "type": "object",
        "required": ["icy_amount", "btc_address", "btc_amount"],
        "properties": {
            "icy_amount": {**_STRING_INT, "description": "wei"},
            "btc_address": {"type": "string"},
            "btc_amount": {**_STRING_INT, "description": "sats"},
        },
    },
    "Signature": {
        "type": "object",
        "required": ["signature", "nonce", "deadline", "icy_amount", "btc_amount"],
        "properties": {
            "signature": {"type": "string", "pattern": "^[0-9a-f]{130}$"},
            "nonce": _STRING_INT,
            "deadline": _STRING_INT,
            "icy_amount": _STRING_INT,
            "btc_amount": _STRING_INT,
        },
    },
    "SwapRequest": {
        "type": "object",
        "required": ["icy_amount", "btc_address", "icy_tx"],
        "properties": {
            "icy_amount": {**_STRING_INT, "description": "wei"},
            "btc_address": {"type": "string"},
            "icy_tx": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"},
        },
    },
    "SwapTransaction": {
        "type": "object",
        "properties": {
            "transaction_hash": {"type": "string"},
            "block_number": {"type": "integer"},
            "icy_amount": _STRING_INT,
            "from_address": {"type": "string"},
            "btc_address": {"type": "string"},
            "btc_amount": _STRING_INT,
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "Transaction": {
        "type": "object",
        "required": [
            "id",
            "swap_transaction_hash",
            "swap_event_index",
            "btc_address",
            "subtotal",
            "service_fee",
            "total",
            "status",
            "confirmations",
        ],
        "properties": {
            "id": {"type": "integer"},
            "btc_transaction_hash": {
                "type": ["string", "null"],
                "description": "The candidate transaction that confirmed, or the newest one while none has",
            },
            "swap_transaction_hash": {"type": "string"},
            "swap_event_index": {
                "type": "integer",
                "minimum": 0,
                "description": "Position of the paying Swap event among the Swap events of its transaction",
            },
            "btc_address": {"type": "string"},
            "subtotal": _STRING_INT,
            "service_fee": _STRING_INT,
            "network_fee": _STRING_INT,
            "total": _STRING_INT,
            "status": {"type": "string", "enum": list(PAYOUT_STATUSES)},
            "confirmations": {"type": "integer", "minimum": 0, "description": "0 while unconfirmed"},
            "failure_reason": {
                "type": ["string", "null"],
                "description": "Short class (e.g. below_dust, daily_limit, insufficient_funds), never free text",
            },
            "hold_reason": {
                "type": ["string", "null"],
                "description": "Why a person must decide (over_limit, price_outlier, operator), never free text",
            },
            "processed_at": {"type": ["string", "null"], "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "icy_swap_tx": {"oneOf": [_ref("SwapTransaction"), {"type": "null"}]},
        },
    },
    "TransactionList": {
        "type": "object",
        "required": ["total", "transactions"],
        "properties": {
            "total": {"type": "integer"},
            "transactions": {"type": "array", "items": _ref("Transaction")},
        },
    },
    "CheckResult": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "latency_ms": {"type": "number"},
            "checked_at": {"type": "string", "format": "date-time"},
            "error": {"type": "string"},
            "metadata": {"type": "object"},
        },
    },
    "HealthResult": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "timestamp": {"type": "string", "format": "date-time"},
            "duration_ms": {"type": "number"},
            "checks": {"type": "object", "additionalProperties": _ref("CheckResult")},
            "role": {"type": "string", "enum": ["leader", "standby", "single"]},
            "jobs": {"type": "object", "additionalProperties": _ref("JobStatus")},
            "summary": _ref("JobsSummary"),
        },
    },
    "JobStatus": {
        "type": "object",
        "properties": {
            "job_name": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "running", "success", "failed", "stalled"]},
            "last_run_time": {"type": ["string", "null"], "format": "date-time"},
            "last_success_time": {"type": ["string", "null"], "format": "date-time"},
            "last_duration_ms": {"type": ["number", "null"]},
            "next_run_time": {"type": ["string", "null"], "format": "date-time"},
            "success_count": {"type": "integer"},
            "failure_count": {"type": "integer"},
            "consecutive_failures": {"type": "integer"},
            "average_execution_ms": {"type": ["number", "null"]},
            "max_execution_ms": {"type": ["number", "null"]},
            "min_execution_ms": {"type": ["number", "null"], "description": "null before the first run"},
            "last_error": {"type": ["string", "null"], "description": "Short class (e.g. timeout), never free text"},
            "metadata": {"type": "object"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "late": {"type": "boolean", "description": "Next run overdue by more than one interval + 30 s"},
            "skipped_count": {"type": "integer", "description": "Ticks skipped: the previous run was still going"},
        },
    },
    "JobsSummary": {
        "type": "object",
        "properties": {
            "total_jobs": {"type": "integer"},
            "running_jobs": {"type": "integer"},
            "healthy_jobs": {"type": "integer"},
            "unhealthy_jobs": {"type": "integer"},
            "stalled_jobs": {"type": "integer"},
            "late_jobs": {"type": "integer"},
            "last_update_time": {"type": ["string", "null"], "format": "date-time"},
            "leader": {
                "type": "string",
                "enum": ["self", "other", "none"],
                "description": "self on the leader (or a single process); on a standby other, or none when no "
                "replica has held the leader lock for 3 intervals",
            },
        },
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PATHS: dict[str, Any] = {
    "/healthz": _health("Liveness: the event loop answers", "Alive"),
    "/livez": _health("Liveness (alias of /healthz)", "Alive"),
    "/readyz": _health("Readiness: started, not draining, database reachable", "Ready"),
    "/api/v1/health/db": _health("Database check", "Healthy or degraded"),
    "/api/v1/health/external": _health("Upstream checks (Esplora, Base RPC, CoinGecko, Mochi Pay)", "Healthy"),
    "/api/v1/health/jobs": _health("Background job status", "Healthy or degraded"),
    "/metrics": {
        "get": {
            "tags": ["metrics"],
            "summary": "Prometheus / OpenMetrics exposition (Bearer token when METRICS_TOKEN is set)",
            "responses": {
                "200": {
                    "description": "Metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {"description": "Missing or wrong bearer token"},
            },
        }
    },
    "/api/v1/oracle/circulated-icy": _oracle("Circulating ICY in wei (fresh)", 18, "circulatedIcy"),
    "/api/v1/oracle/treasury-btc": _oracle("Treasury BTC in sats (fresh)", 8, "treasuryBtc"),
    "/api/v1/oracle/icy-btc-ratio": _oracle("ICY per 1 BTC x 10^8 (fresh)", 8, "icyBtcRatio"),
    "/api/v1/oracle/icy-btc-ratio-cached": _oracle(
        "ICY per 1 BTC x 10^8 from the 5-minute cache", 8, "icyBtcRatioCached"
    ),
    "/api/v1/swap/info": {
        "get": {
            "tags": ["swap"],
            "summary": "Balances, rates and the minimum swap; partial data with warnings",
            "operationId": "swapInfo",
            "responses": {
                "200": _json(_enveloped(_ref("SwapInfo")), "Swap info"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/v1/swap/generate-signature": {
        "post": {
            "tags": ["swap"],
            "summary": "EIP-712 authorisation for a swap (validated against the pricing ratio; 503 oracle_incomplete)",
            "operationId": "generateSignature",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SignatureRequest")}},
            },
            "responses": {
                "200": _json(_enveloped(_ref("Signature")), "Signature"),
                "400": _INVALID,
                "413": _ERR,
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/v1/swap": {
        "post": {
            "tags": ["swap"],
            "summary": "Ask the service to swap ICY already sent to the signer wallet",
            "operationId": "createSwapRequest",
            "security": _SECURED,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SwapRequest")}},
            },
            "responses": {
                "200": _json(_enveloped({"type": "string", "const": "success"}), "Created"),
                "400": _INVALID,
                "401": _UNAUTHORIZED,
                "409": _ERR,
                "413": _ERR,
            },
        }
    },
    "/api/v1/transactions": {
        "get": {
            "tags": ["transactions"],
            "summary": "BTC payouts with their Swap events (no envelope)",
            "operationId": "listTransactions",
            "parameters": [
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "Page size"),
                _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "Rows to skip"),
                _query("btc_address", {"type": "string"}, "Payout address"),
                _query("evm_address", {"type": "string"}, "Swap sender (case-insensitive)"),
                _query(
                    "status",
                    {"type": "string", "enum": list(PAYOUT_STATUSES)},
                    "Payout status",
                ),
            ],
            "responses": {
                "200": _json(_ref("TransactionList"), "A page of payouts"),
                "400": _INVALID,
                "503": _UNAVAILABLE,
            },
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["docs"],
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
        }
    },
    "/docs": {
        "get": {
            "tags": ["docs"],
            "summary": "A small HTML page listing the operations",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "icy-backend",
            "version": __version__,
            "description": "ICY <-> BTC swap backend. Amounts are decimal integer strings (wei, sats).",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in ("health", "metrics", "oracle", "swap", "transactions", "docs")],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`<key>` or `ApiKey <key>`; enforced in prod only",
                }
            },
        },
    }


__all__ = ["openapi_document"]
