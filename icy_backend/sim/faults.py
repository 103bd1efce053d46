"""Fault injection for the simulators: a pure-ASGI middleware plus the `/_sim/faults` control routes.

A fault is matched on the path relative to the simulator's mount point (``*`` for every path, a path prefix
such as ``/address``) or, for JSON-RPC simulators, on a method name such as ``eth_getLogs`` (the request body
is buffered, inspected and replayed to the inner app). The first matching fault applies. Control routes
(``/_sim/...``) are never subject to faults.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

CONTROL_PREFIX = "/_sim/"
FAULTS_PATH = "/_sim/faults"


class SimulatedConnectionReset(httpx.ReadError, ConnectionResetError):
    """Raised by the app for a ``reset`` fault.

    Under ``httpx.ASGITransport`` the exception reaches the client unchanged, so it is both an httpx transport
    error and a ``ConnectionResetError``; under a real server the half-sent response makes the server drop the
    connection, which the client sees as a transport error too.
    """

    def __init__(self, message: str = "connection reset by simulator") -> None:
        super().__init__(message)


@dataclass
class Fault:
    """One fault. ``path``: ``*``, a path prefix (``/tx``) or a JSON-RPC method name (``eth_getLogs``)."""

    path: str = "*"
    latency_ms: int = 0
    hang: bool = False
    hang_after: bool = False
    status: int | None = None
    retry_after: int | None = None
    malformed: bool = False
    reset: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """Build a fault from the control endpoint's JSON body; raises ValueError on bad input."""
        if not isinstance(data, dict):
            raise ValueError("fault must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        fault = cls(**data)
        if not isinstance(fault.path, str) or not fault.path:
            raise ValueError("path must be a non-empty string")
        for name in ("hang", "hang_after", "malformed", "reset"):
            if not isinstance(getattr(fault, name), bool):
                raise ValueError(f"{name} must be a boolean")
        latency = fault.latency_ms
        if not isinstance(latency, int) or isinstance(latency, bool) or latency < 0:
            raise ValueError("latency_ms must be a non-negative integer")
        for name in ("status", "retry_after"):
            value = getattr(fault, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer or null")
        if fault.status is not None and not 100 <= fault.status <= 599:
            raise ValueError("status must be an HTTP status code")
        return fault

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_method(self) -> bool:
        return self.path != "*" and not self.path.startswith("/")


class FaultSet:
    """The faults of one simulator. Setting a fault for a path replaces the previous one for that path."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def set(self, fault: Fault) -> None:
        self._faults = [f for f in self._faults if f.path != fault.path]
        self._faults.append(fault)

    def remove(self, path: str) -> None:
        self._faults = [f for f in self._faults if f.path != path]

    def clear(self) -> None:
        self._faults = []

    def all(self) -> list[Fault]:
        return list(self._faults)

    def __bool__(self) -> bool:
        return bool(self._faults)

    @property
    def needs_methods(self) -> bool:
        return any(f.is_method for f in self._faults)

    def match(self, path: str, methods: list[str]) -> Fault | None:
        for fault in self._faults:
            if fault.path == "*":
                return fault
            if fault.is_method:
                if fault.path in methods:
                    return fault
            elif path == fault.path or path.startswith(fault.path.rstrip("/") + "/") or fault.path == "/":
                return fault
        return None


def route_path(scope: Scope) -> str:
    """The request path relative to the mount point (Starlette keeps the full path and sets root_path)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


async def send_json(send: Send, status: int, body: Any, headers: Headers | None = None) -> None:
    data = json.dumps(body).encode()
    await send_bytes(send, status, data, b"application/json", headers)


async def send_bytes(send: Send, status: int, data: bytes, content_type: bytes, headers: Headers | None = None) -> None:
    hdrs = [(b"content-type", content_type), (b"content-length", str(len(data)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def jsonrpc_methods(body: bytes) -> list[str]:
    """Method names in a JSON-RPC request or batch (empty when the body is not JSON-RPC)."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    items = data if isinstance(data, list) else [data]
    return [str(item["method"]) for item in items if isinstance(item, dict) and "method" in item]


async def _wait_forever(receive: Receive) -> None:
    """Never answer; return only when the client goes away (so a real server can clean up)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class FaultInjector:
    """Pure-ASGI middleware applying the first matching fault and serving the ``/_sim/faults`` routes."""

    def __init__(self, app: ASGIApp, faults: FaultSet) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path == FAULTS_PATH or path == FAULTS_PATH + "/":
            await self._control(scope, receive, send)
            return
        if path.startswith(CONTROL_PREFIX) or not self.faults:
            await self.app(scope, receive, send)
            return
        methods: list[str] = []
        if self.faults.needs_methods and scope.get("method") == "POST":
            body = await read_body(receive)
            methods = jsonrpc_methods(body)
            receive = _replay(body, receive)
        fault = self.faults.match(path, methods)
        if fault is None:
            await self.app(scope, receive, send)
            return
        await self._apply(fault, scope, receive, send)

    async def _apply(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        if fault.latency_ms:
            await anyio.sleep(fault.latency_ms / 1000)
        if fault.hang:
            await _wait_forever(receive)
            return
        if fault.reset:
            # Start a response whose body never completes, then fail: a real server drops the connection.
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            raise SimulatedConnectionReset()
        if fault.status is not None:
            headers: Headers = []
            if fault.retry_after is not None:
                headers.append((b"retry-after", str(fault.retry_after).encode()))
            await send_json(send, fault.status, {"error": "simulated fault", "status": fault.status}, headers)
            return
        if fault.malformed:
            await send_bytes(send, 200, b"<html>simulated garbage {not json", b"application/json")
            return
        if fault.hang_after:

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            await _wait_forever(receive)
            return
        await self.app(scope, receive, send)

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if method == "GET":
            await send_json(send, 200, {"faults": [f.to_json() for f in self.faults.all()]})
        elif method == "DELETE":
            self.faults.clear()
            await send_json(send, 200, {"faults": []})
        elif method in ("PUT", "POST"):
            body = await read_body(receive)
            try:
                fault = Fault.from_json(json.loads(body or b"null"))
            except (ValueError, TypeError) as exc:
                await send_json(send, 400, {"error": str(exc)})
                return
            self.faults.set(fault)
            await send_json(send, 200, {"faults": [f.to_json() for f in self.faults.all()]})
        else:
            await send_json(send, 405, {"error": "method not allowed"})


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
