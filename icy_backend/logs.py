"""Structured logging (JSON in prod, console elsewhere) with redaction of URLs and secret values.

Redaction happens on the fully formatted line (message, arguments and traceback alike): URLs are cut to
``scheme://host`` (credentials, path, query and fragment dropped — RPC paths and webhook paths carry tokens), and
every configured secret value is masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s/@'\"<>]*@)?(?P<host>[^\s/?#'\"<>]*)[^\s'\"<>]*")

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class Redactor:
    """Masks URLs and known secret values in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return _URL.sub(_shorten_url, text)


def _shorten_url(match: re.Match[str]) -> str:
    short = match.group("scheme") + match.group("host")
    return short if match.group(0) == short else short + "/…"


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor, *, json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.redactor = redactor
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_lines:
            return self.redactor(super().format(record))
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                payload[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return self.redactor(json.dumps(payload, default=str, ensure_ascii=False))


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> Redactor:
    """Install one stderr handler on the root logger with the redacting formatter; returns the redactor."""
    redactor = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(redactor, json_lines=fmt == "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_icy_backend", False):
            root.removeHandler(old)
    handler._icy_backend = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter that could echo URLs at INFO.
    for noisy in ("httpx", "httpcore", "hpack", "hypercorn.access", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    return redactor
