"""API-key auth in prod (SPEC §4): open and protected paths, constant-time compare."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from icy_backend.http.responses import envelope

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/openapi.json", "/docs"})
OPEN_PREFIXES = ("/api/v1/health/",)
OPEN_METHOD_PATHS = frozenset(
    {
        ("GET", "/api/v1/swap/info"),
        ("HEAD", "/api/v1/swap/info"),
        ("GET", "/api/v1/transactions"),
        ("HEAD", "/api/v1/transactions"),
        ("POST", "/api/v1/swap/generate-signature"),
    }
)


# path -> the methods open on it (None: every method); one dict lookup decides most requests.
_OPEN_BY_PATH: dict[str, frozenset[str] | None] = {path: None for path in OPEN_PATHS}
for _method, _path in OPEN_METHOD_PATHS:
    if _path not in OPEN_PATHS:
        _OPEN_BY_PATH[_path] = (_OPEN_BY_PATH.get(_path) or frozenset()) | {_method}


def is_open(method: str, path: str) -> bool:
    """Whether ``method path`` is open in every environment. Everything else needs the key (default deny)."""
    if path in _OPEN_BY_PATH:
        methods = _OPEN_BY_PATH[path]
        if methods is None or method in methods:
            return True
    if method == "OPTIONS":  # CORS preflight never carries credentials
        return True
    return path.startswith(OPEN_PREFIXES)


class ApiKeyMiddleware:
    """``Authorization: <key>`` or ``Authorization: ApiKey <key>``; 401 ``Missing API key`` / ``Invalid API key``."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        if not api_key:
            raise ValueError("API key must not be empty")
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = bytes(value)
                break
        if not header:
            await envelope(None, error="Missing API key", status_code=401)(scope, receive, send)
            return
        presented = header[7:].strip() if header[:7].lower() == b"apikey " else header.strip()
        if not hmac.compare_digest(presented, self._key):
            await envelope(None, error="Invalid API key", status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)
