"""Run an ASGI app's lifespan in a test and talk to it with httpx, with lifespan state passed to requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class WithState:
    """What a server does: copy the lifespan state into every request scope (httpx's ASGITransport runs no
    lifespan)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)


async def _run_app(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    await app(scope, receive, send)


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Run startup, yield the lifespan state, run shutdown."""
    state: dict[str, Any] = {}
    to_app, app_inbox = anyio.create_memory_object_stream[Message](4)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](4)

    async def receive() -> Message:
        return await app_inbox.receive()

    async def send(message: Message) -> None:
        await app_outbox.send(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    async with anyio.create_task_group() as tg, to_app, from_app, app_inbox, app_outbox:
        tg.start_soon(_run_app, app, scope, receive, send)
        await to_app.send({"type": "lifespan.startup"})
        reply = await from_app.receive()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {reply.get('message')}")
        try:
            yield state
        finally:
            with anyio.CancelScope(shield=True):
                await to_app.send({"type": "lifespan.shutdown"})
                reply = await from_app.receive()
                if reply["type"] != "lifespan.shutdown.complete":
                    raise RuntimeError(f"shutdown failed: {reply.get('message')}")


@asynccontextmanager
async def client_for(app: ASGIApp, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in-process, with its lifespan running."""
    async with lifespan(app) as state:
        transport = httpx.ASGITransport(app=WithState(app, state), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client
