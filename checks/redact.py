"""Turning exceptions into short classes for bodies, and into URL-safe text for the log."""

from __future__ import annotations

import logging
import re

import sqlalchemy.exc

from icy_backend.clients.errors import error_class

log = logging.getLogger("checks")

# scheme://[userinfo@]host[:port][/path][?query][#fragment] → scheme://host[:port]/… (paths can hold API keys,
# e.g. RPC providers' /v2/<key>; userinfo and query strings hold credentials).
_URL = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s/@'\"]*@)?(?P<host>[^\s/?#'\"]*)(?P<rest>[^\s'\"]*)")


def strip_urls(text: str) -> str:
    """Replace every URL in ``text`` by its scheme and host (no credentials, path or query string)."""

    def _sub(match: re.Match[str]) -> str:
        suffix = "/…" if match.group("rest") not in ("", "/") else ""
        return f"{match.group('scheme')}{match.group('host')}{suffix}"

    return _URL.sub(_sub, text)


def classify(exc: BaseException) -> str:
    """The short class of ``exc`` (SPEC §5), looking through wrappers (SQLAlchemy, causes) for a known one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # pool checkout timeout
            return "timeout"
        cls = error_class(current)
        if cls != "internal_error":
            return cls
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            current = orig
        else:
            current = current.__cause__ or current.__context__
    return "internal_error"


def describe(exc: BaseException) -> str:
    """Exception type and text with its causes, URLs stripped: for the log only, never for a body."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {strip_urls(str(current))}".rstrip(": "))
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def log_failure(check: str, exc: BaseException, cls: str) -> None:
    log.warning("health check %s failed (%s): %s", check, cls, describe(exc))
