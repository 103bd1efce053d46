"""The cheap paths of our middleware answer exactly as the general ones (and as Starlette's CORS middleware)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.middleware import cors as starlette_cors
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icy_backend.middleware.auth import OPEN_METHOD_PATHS, OPEN_PATHS, OPEN_PREFIXES, is_open
from icy_backend.middleware.body_limit import BodyLimitMiddleware
from icy_backend.middleware.cors import CORSMiddleware

pytestmark = pytest.mark.anyio

Headers = list[tuple[bytes, bytes]]


def _scope(method: str, headers: Headers, http_version: str = "1.1") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": "/x",
        "raw_path": b"/x",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def _inner(response_headers: Headers, chunks: list[bytes] | None = None) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if chunks is not None:  # read the whole body, like a JSON handler
            while True:
                message = await receive()
                if not message.get("more_body", False):
                    break
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _run(app: ASGIApp, scope: Scope, chunks: list[bytes] | None = None) -> list[Message]:
    sent: list[Message] = []
    pending = list(chunks or [b""])

    async def receive() -> Message:
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


CORS_CONFIGS: list[dict[str, Any]] = [
    {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST", "OPTIONS"], "max_age": 600},
    {"allow_origins": ["*"]},
    {"allow_origins": ["*"], "allow_credentials": True, "expose_headers": ["X-Request-Id"]},
    {"allow_origin_regex": r"https://.*\.example", "allow_headers": ["Authorization"]},
]
REQUEST_HEADERS: list[Headers] = [
    [(b"host", b"t")],
    [(b"origin", b"https://app.example")],
    [(b"origin", b"https://evil.test")],
    [(b"origin", b"https://a.example"), (b"origin", b"https://evil.test")],
    [(b"origin", b"https://app.example"), (b"access-control-request-method", b"POST")],
    [(b"origin", b"https://evil.test"), (b"access-control-request-method", b"PUT")],
    [(b"access-control-request-method", b"GET")],
]
RESPONSE_HEADERS: list[Headers] = [
    [(b"content-type", b"application/json")],
    [(b"vary", b"Accept"), (b"content-type", b"text/plain"), (b"Vary", b"x"), (b"vary", b"Accept-Encoding")],
    [(b"access-control-allow-origin", b"stale"), (b"access-control-allow-origin", b"stale2")],
]


@pytest.mark.parametrize("config", CORS_CONFIGS)
@pytest.mark.parametrize("request_headers", REQUEST_HEADERS)
@pytest.mark.parametrize("response_headers", RESPONSE_HEADERS)
@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
async def test_cors_matches_starlette(
    config: dict[str, Any], request_headers: Headers, response_headers: Headers, method: str
) -> None:
    ours = CORSMiddleware(_inner(list(response_headers)), **config)
    theirs = starlette_cors.CORSMiddleware(_inner(list(response_headers)), **config)
    ours_scope, theirs_scope = _scope(method, list(request_headers)), _scope(method, list(request_headers))
    assert await _run(ours, ours_scope) == await _run(theirs, theirs_scope)
    assert ours_scope == theirs_scope


async def test_cors_does_not_edit_the_apps_header_list() -> None:
    response_headers = [(b"content-type", b"application/json")]
    await _run(CORSMiddleware(_inner(response_headers), allow_origins=["*"]), _scope("GET", []))
    assert response_headers == [(b"content-type", b"application/json")]


CHUNKS = [b"x" * 1024] * 70  # 70 KiB: over the 64 KiB limit
BODY_CASES = [
    ("1.1", [], None),  # no body, not counted
    ("1.1", [(b"transfer-encoding", b"chunked")], CHUNKS),
    ("2", [], CHUNKS),  # HTTP/2 may stream a body with neither header: still counted
    ("1.1", [(b"content-length", str(len(b"".join(CHUNKS[:60]))).encode())], CHUNKS[:60]),
    ("1.1", [(b"content-length", b"70000")], CHUNKS),
    ("1.1", [(b"content-length", b"nope")], None),
]


@pytest.mark.parametrize(("http_version", "headers", "chunks"), BODY_CASES)
async def test_body_limit_answers(http_version: str, headers: Headers, chunks: list[bytes] | None) -> None:
    app = BodyLimitMiddleware(_inner([], chunks))
    sent = await _run(app, _scope("POST", headers, http_version), chunks)
    declared = dict(headers).get(b"content-length")
    expected = 200
    if declared == b"nope":
        expected = 400
    elif chunks is not None and len(b"".join(chunks)) > 64 * 1024:
        expected = 413
    assert sent[0]["status"] == expected


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "OPTIONS", "PUT"])
@pytest.mark.parametrize(
    "path",
    [*OPEN_PATHS, *(p for _, p in OPEN_METHOD_PATHS), *(p + "db" for p in OPEN_PREFIXES), "/api/v1/swap", "/x"],
)
def test_is_open_as_the_rule_reads(method: str, path: str) -> None:
    expected = (
        path in OPEN_PATHS
        or (method, path) in OPEN_METHOD_PATHS
        or method == "OPTIONS"
        or path.startswith(OPEN_PREFIXES)
    )
    assert is_open(method, path) is expected
