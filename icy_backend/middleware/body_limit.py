"""Reject request bodies over a limit with 413 (SPEC §4: 64 KiB)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icy_backend.http.responses import envelope

MAX_BODY_BYTES = 64 * 1024
_HTTP1 = frozenset({"1.0", "1.1"})


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 when ``Content-Length`` exceeds the limit, or when a streamed body grows past it while being read."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framed = False  # the request says it has a body: Content-Length or Transfer-Encoding
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._reject(scope, receive, send, declared < 0)
                    return
                framed = True
                break
            if name == b"transfer-encoding":
                framed = True
        if not framed and scope.get("http_version") in _HTTP1:
            # HTTP/1.x: no Content-Length and no Transfer-Encoding means no body (RFC 9112 §6.3), nothing to count.
            # (HTTP/2 and 3 can stream a body without either header, so those are always counted.)
            await self.app(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _TooLarge:
            if started:
                raise
            await self._reject(scope, receive, send, False)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, bad_length: bool) -> None:
        if bad_length:
            response = envelope(None, error="Invalid Content-Length", status_code=400)
        else:
            response = envelope(None, error="Request body too large", status_code=413)
        await response(scope, receive, send)
