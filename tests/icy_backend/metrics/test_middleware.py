"""HttpMetricsMiddleware: label values, bounded cardinality, in-flight accounting."""

from __future__ import annotations

import random
import string

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.types import Message, Scope

from icy_backend.metrics import Metrics
from icy_backend.metrics.middleware import HttpMetricsMiddleware

from .conftest import http_series, sample

REQ = "icy_backend_http_requests_total"
DUR = "icy_backend_http_request_duration_seconds_count"
SIZE_SUM = "icy_backend_http_response_size_bytes_sum"
IN_FLIGHT = "icy_backend_http_requests_in_flight"


def client(app: Starlette) -> httpx.AsyncClient:
    # The app's ServerErrorMiddleware answers 500 and re-raises; the transport swallows the re-raise.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.anyio
async def test_matched_route_uses_template(app: Starlette, metrics: Metrics) -> None:
    async with client(app) as c:
        r1 = await c.get("/items/1")
        await c.get("/items/secret-user-value")
    assert r1.status_code == 200
    labels = {"method": "GET", "path": "/items/{item_id}", "status": "200"}
    assert sample(metrics, REQ, **labels) == 2
    assert sample(metrics, DUR, **labels) == 2
    assert sample(metrics, SIZE_SUM, **labels) == len(r1.content) + len(b'{"id":"secret-user-value"}')
    assert sample(metrics, IN_FLIGHT, method="GET") == 0
    exposition = metrics.registry.collect()
    assert not any("secret-user-value" in str(f.samples) for f in exposition)


@pytest.mark.anyio
async def test_mount_composes_prefix(app: Starlette, metrics: Metrics) -> None:
    async with client(app) as c:
        r = await c.get("/sub/acme/things/7")
        missing = await c.get("/sub/acme/nothing-here")
    assert r.status_code == 200
    assert missing.status_code == 404
    assert sample(metrics, REQ, method="GET", path="/sub/{tenant}/things/{thing_id}", status="200") == 1
    assert sample(metrics, REQ, method="GET", path="<unmatched>", status="404") == 1


@pytest.mark.anyio
async def test_unmatched_is_one_label(app: Starlette, metrics: Metrics) -> None:
    async with client(app) as c:
        assert (await c.get("/nope")).status_code == 404
        assert (await c.get("/also/nope")).status_code == 404
    assert sample(metrics, REQ, method="GET", path="<unmatched>", status="404") == 2


@pytest.mark.anyio
async def test_405_keeps_the_route_template(app: Starlette, metrics: Metrics) -> None:
    async with client(app) as c:
        assert (await c.get("/create")).status_code == 405
        assert (await c.post("/create")).status_code == 201
    assert sample(metrics, REQ, method="GET", path="/create", status="405") == 1
    assert sample(metrics, REQ, method="POST", path="/create", status="201") == 1


@pytest.mark.anyio
async def test_handler_exception_records_500(app: Starlette, metrics: Metrics) -> None:
    async with client(app) as c:
        r = await c.get("/boom")
    assert r.status_code == 500
    assert sample(metrics, REQ, method="GET", path="/boom", status="500") == 1
    assert sample(metrics, DUR, method="GET", path="/boom", status="500") == 1
    assert sample(metrics, IN_FLIGHT, method="GET") == 0


@pytest.mark.anyio
async def test_exception_is_reraised(metrics: Metrics) -> None:
    async def raising_app(scope: Scope, receive: object, send: object) -> None:
        raise RuntimeError("inner")

    mw = HttpMetricsMiddleware(raising_app, metrics)
    with pytest.raises(RuntimeError, match="inner"):
        await mw(_scope("GET", "/x"), _never_receive, _discard_send)
    assert sample(metrics, REQ, method="GET", path="<unmatched>", status="500") == 1
    assert sample(metrics, IN_FLIGHT, method="GET") == 0


@pytest.mark.anyio
async def test_unknown_method_is_other(app: Starlette, metrics: Metrics) -> None:
    async with client(app) as c:
        await c.request("PROPFIND", "/items/1")
        await c.request("BREW", "/nope")
    assert sample(metrics, REQ, method="OTHER", path="/items/{item_id}", status="405") == 1
    assert sample(metrics, REQ, method="OTHER", path="<unmatched>", status="404") == 1
    assert sample(metrics, IN_FLIGHT, method="OTHER") == 0
    assert sample(metrics, REQ, method="PROPFIND", path="/items/{item_id}", status="405") is None


@pytest.mark.anyio
async def test_random_paths_add_no_series(app: Starlette, metrics: Metrics) -> None:
    rng = random.Random(1234)
    async with client(app) as c:
        await c.get("/nope")  # the <unmatched> 404 series exists now
        await c.get("/sub/x/nope")
        await c.request("BREW", "/nope")
        before = http_series(metrics)
        for _ in range(2000):
            path = "/" + "/".join(
                "".join(rng.choices(string.ascii_letters + string.digits + "-_.%", k=rng.randint(1, 12)))
                for _ in range(rng.randint(1, 4))
            )
            method = rng.choice(["GET", "GET", "BREW", "XYZ" + str(rng.randint(0, 999))])
            r = await c.request(method, path)
            assert r.status_code == 404
    assert http_series(metrics) == before
    total = sum(
        v
        for m in ("GET", "OTHER")
        if (v := sample(metrics, REQ, method=m, path="<unmatched>", status="404")) is not None
    )
    assert total == 2003


@pytest.mark.anyio
async def test_in_flight_during_and_after_streaming(app: Starlette, metrics: Metrics) -> None:
    async with client(app) as c:
        r = await c.get("/stream")
    assert r.text.splitlines()[0] == "1.0"  # in flight while the body was being produced
    assert sample(metrics, IN_FLIGHT, method="GET") == 0
    assert sample(metrics, SIZE_SUM, method="GET", path="/stream", status="200") == len(r.content)


@pytest.mark.anyio
async def test_in_flight_after_client_disconnect(app: Starlette, metrics: Metrics) -> None:
    """ASGI < 2.4: Starlette notices ``http.disconnect`` and stops the endless stream."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(_scope("GET", "/forever"), receive, send)
    assert sample(metrics, IN_FLIGHT, method="GET") == 0
    assert sample(metrics, REQ, method="GET", path="/forever", status="200") == 1


@pytest.mark.anyio
async def test_in_flight_after_send_fails(app: Starlette, metrics: Metrics) -> None:
    """ASGI 2.4: the server's ``send`` raises OSError once the client is gone; the request still ends."""
    chunks = 0

    async def send(message: Message) -> None:
        nonlocal chunks
        if message["type"] == "http.response.body":
            chunks += 1
            if chunks == 3:
                raise OSError("connection lost")

    scope = _scope("GET", "/forever")
    scope["asgi"] = {"version": "3.0", "spec_version": "2.4"}
    with pytest.raises(ClientDisconnect):  # Starlette turns the OSError into ClientDisconnect
        await app(scope, _never_receive, send)
    assert sample(metrics, IN_FLIGHT, method="GET") == 0
    assert sample(metrics, REQ, method="GET", path="/forever", status="500") == 1


@pytest.mark.anyio
async def test_cancelled_request_is_not_counted_as_500(app: Starlette, metrics: Metrics) -> None:
    """A request cancelled mid-handler (shutdown) has no outcome: no 500, and in-flight goes back to 0."""
    started = anyio.Event()

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, _scope("GET", "/forever"), receive, send)
        await started.wait()
        assert sample(metrics, IN_FLIGHT, method="GET") == 1
        tg.cancel_scope.cancel()
    assert sample(metrics, IN_FLIGHT, method="GET") == 0
    assert sample(metrics, REQ, method="GET", path="/forever", status="500") is None
    assert sample(metrics, REQ, method="GET", path="/forever", status="200") is None


@pytest.mark.anyio
async def test_non_http_scopes_pass_through(metrics: Metrics) -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: object, send: object) -> None:
        seen.append(scope["type"])

    mw = HttpMetricsMiddleware(inner, metrics)
    await mw({"type": "lifespan"}, _never_receive, _discard_send)
    await mw({"type": "websocket", "path": "/ws"}, _never_receive, _discard_send)
    assert seen == ["lifespan", "websocket"]
    assert http_series(metrics) == 8  # only the in-flight gauges, one per method label, all at 0


@pytest.mark.anyio
async def test_children_cache_is_bounded(metrics: Metrics) -> None:
    async def ok(scope: Scope, receive: object, send: object) -> None:
        status = int(scope["path"].strip("/"))
        await send({"type": "http.response.start", "status": status, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ab"})  # type: ignore[operator]

    mw = HttpMetricsMiddleware(ok, metrics, max_cached=2)
    for status in (200, 201, 202, 203, 203):
        await mw(_scope("GET", f"/{status}"), _never_receive, _discard_send)
    assert len(mw._children) == 2
    assert sample(metrics, REQ, method="GET", path="<unmatched>", status="203") == 2
    assert sample(metrics, SIZE_SUM, method="GET", path="<unmatched>", status="203") == 4


def _scope(method: str, path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


async def _never_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard_send(message: Message) -> None:
    return None
