"""A loopback TCP proxy that can freeze: stop forwarding both ways without closing anything (a partition)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup


class FreezableProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``. :meth:`freeze` holds every byte in both directions (and new
    connections) while every socket stays open, like a network partition that neither side can see;
    :meth:`thaw` resumes. Closing the proxy closes every connection."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.frozen = False
        self.connections = 0
        self._thawed = anyio.Event()
        self._thawed.set()

    def freeze(self) -> None:
        self.frozen = True
        self._thawed = anyio.Event()

    def thaw(self) -> None:
        self.frozen = False
        self._thawed.set()

    async def _pass(self) -> None:
        while self.frozen:
            await self._thawed.wait()

    async def _pump(self, src: SocketStream, dst: SocketStream) -> None:
        try:
            while True:
                await self._pass()
                data = await src.receive()
                await self._pass()  # received just before a freeze: held, not forwarded
                await dst.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await dst.aclose()

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            await self._pass()
            try:
                upstream = await anyio.connect_tcp(*self.upstream)
            except OSError:
                return
            self.connections += 1
            async with upstream, anyio.create_task_group() as tg:
                tg.start_soon(self._pump, client, upstream)
                tg.start_soon(self._pump, upstream, client)

    async def _serve(self, tg: TaskGroup) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(SocketAttribute.local_port)
        async with listener:
            await listener.serve(self._handle, task_group=tg)


@asynccontextmanager
async def freezable_proxy(upstream_host: str, upstream_port: int) -> AsyncIterator[FreezableProxy]:
    proxy = FreezableProxy(upstream_host, upstream_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(proxy._serve, tg)
        with anyio.fail_after(5):
            while not proxy.port:
                await anyio.sleep(0.01)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
