"""Typed errors of the outbound clients, and their redacted class names (SPEC §5).

The ``error_class`` of an error is the only thing a health body, job status or error envelope may show; the
full error (URLs stripped by the log filter) goes to the log.
"""

from __future__ import annotations

import re


class UpstreamError(Exception):
    """Base of every outbound-call failure. ``service`` is one of ``BREAKER_SERVICES`` or ``webhook``."""

    error_class = "connection_error"

    def __init__(self, service: str, detail: str = "") -> None:
        super().__init__(f"{service}: {detail}" if detail else service)
        self.service = service
        self.detail = detail


class UpstreamTimeout(UpstreamError):
    """Connect, read or overall-deadline timeout. ``kind`` is ``connect``, ``read`` or ``deadline``."""

    error_class = "timeout"

    def __init__(self, service: str, kind: str = "deadline", detail: str = "") -> None:
        super().__init__(service, detail or f"{kind} timeout")
        self.kind = kind


class UpstreamConnectionError(UpstreamError):
    """The connection could not be made or was reset."""

    error_class = "connection_error"

    def __init__(self, service: str, detail: str = "", *, refused: bool = False) -> None:
        super().__init__(service, detail)
        self.refused = refused
        if refused:
            self.error_class = "connection_refused"


class UpstreamHTTPStatus(UpstreamError):
    """A non-2xx HTTP answer. 5xx and 429 count as breaker failures; other 4xx do not."""

    def __init__(self, service: str, status_code: int, retry_after: float | None = None) -> None:
        super().__init__(service, f"HTTP {status_code}")
        self.status_code = status_code
        self.retry_after = retry_after
        self.error_class = "http_5xx" if status_code >= 500 else "http_4xx"

    @property
    def is_failure(self) -> bool:
        """Whether this answer counts toward the breaker."""
        return self.status_code >= 500 or self.status_code == 429


class BroadcastRejected(UpstreamHTTPStatus):
    """The node refused a broadcast transaction (HTTP 400). An answer, not a breaker failure.

    ``reason`` is the node's text (may hold amounts: log it at DEBUG only); ``min_fee`` is the fee in sats the
    node asked for when the reason is ``min relay fee not met, A < B``.
    """

    error_class = "broadcast_rejected"

    def __init__(self, service: str, reason: str, status_code: int = 400) -> None:
        super().__init__(service, status_code)
        self.error_class = "broadcast_rejected"
        self.reason = reason
        self.min_fee = _min_fee(reason)


def _min_fee(reason: str) -> int | None:
    match = re.search(r"min relay fee not met,\s*(\d+)\s*<\s*(\d+)", reason)
    return int(match.group(2)) if match else None


class InvalidResponse(UpstreamError):
    """The upstream answered with something that is not the expected wire format."""

    error_class = "invalid_response"


class JsonRpcError(UpstreamError):
    """A JSON-RPC error object. Reverts (code 3 / ``execution reverted``) are not breaker failures."""

    error_class = "invalid_response"

    def __init__(self, service: str, code: int, message: str, data: object = None) -> None:
        super().__init__(service, f"JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    @property
    def is_revert(self) -> bool:
        return self.code == 3 or "revert" in self.message.lower()

    @property
    def is_failure(self) -> bool:
        """Whether this error says the node (transport) failed, rather than answering our request.

        Reverts, a too-large log range, bad params and other application answers (``nonce too low``,
        ``already known``) are answers, not failures: they neither trip the breaker nor get retried.
        """
        if self.is_revert or self.is_range_too_large:
            return False
        if self.code in (-32603, -32700):  # internal error, parse error: the node is broken
            return True
        text = self.message.lower()
        return self.code == -32005 or any(
            hint in text
            for hint in (
                "rate limit",
                "too many requests",
                "timeout",
                "timed out",
                "unavailable",
                "overload",
                "capacity",
                "header not found",
            )
        )

    @property
    def is_range_too_large(self) -> bool:
        text = self.message.lower()
        return self.code == -32005 or ("range" in text and ("too large" in text or "exceed" in text or "limit" in text))


class ChainIdMismatch(UpstreamError):
    """The node serves another chain than ``BLOCKCHAIN_CHAIN_ID``."""

    error_class = "chain_id_mismatch"


class CircuitOpenError(UpstreamError):
    """The service's breaker is open (or half-open and full); no request was sent."""

    error_class = "circuit_open"

    def __init__(self, service: str, retry_after: float | None = None) -> None:
        super().__init__(service, "circuit open")
        self.retry_after = retry_after


class NotConfigured(UpstreamError):
    """No endpoint is configured for this service."""

    error_class = "not_configured"


def error_class(exc: BaseException) -> str:
    """The short stable class of any exception, for bodies and labels (never its text)."""
    if isinstance(exc, UpstreamError):
        return exc.error_class
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, OSError | ConnectionError):
        return "connection_error"
    return "internal_error"
