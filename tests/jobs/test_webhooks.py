"""Uptime webhooks against a real loopback HTTP receiver: success, /fail, hanging receivers, no URL in logs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream

from icy_backend.clients.webhook import WebhookClient
from icy_backend.metrics import Metrics
from jobs.context import JobContext
from tests.jobs.conftest import fast_settings, job, make_runtime, running, sample, wait_for

RUNS = "icy_backend_background_job_runs_total"
TOKEN = "tok-5f3a9c-SECRET"


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records request paths (and can hang instead of answering)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.paths: list[str] = []
        self.hang = hang
        self.port = 0

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            self.paths.append(data.split(b"\r\n", 1)[0].decode().split(" ")[1])
            if self.hang:
                await anyio.sleep(60)
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")

    def url(self, job_name: str) -> str:
        return f"http://127.0.0.1:{self.port}/ping/{TOKEN}-{job_name}"

    def path_set(self) -> set[str]:
        return {path_of(p) for p in self.paths}


def path_of(target: str) -> str:
    return urlsplit(target).path


def rid_of(target: str) -> str:
    return parse_qs(urlsplit(target).query)["rid"][0]


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    receiver.port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, receiver.handle)
        try:
            yield receiver
        finally:
            tg.cancel_scope.cancel()


class SocketPinger:
    """A test pinger speaking plain HTTP/1.1 GET over a TCP socket (the production one is WebhookClient)."""

    def __init__(self) -> None:
        self.calls = 0

    async def ping(self, url: str, kind: str = "success") -> bool:
        self.calls += 1
        rest = url.removeprefix("http://")
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        try:
            async with await anyio.connect_tcp(host, int(port)) as stream:
                await stream.send(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
                head = await stream.receive()
        except OSError:
            return False
        return head.startswith(b"HTTP/1.1 2")


@pytest.mark.anyio
@pytest.mark.parametrize("fail_suffix", [True, False])
async def test_success_pings_url_and_failure_pings_fail_when_enabled(metrics: Metrics, fail_suffix: bool) -> None:
    async def ok(ctx: JobContext) -> None:
        ctx.item_succeeded()

    async def bad(ctx: JobContext) -> None:
        ctx.item_failed("http_5xx")

    settings = fast_settings(UPTIME_WEBHOOK_FAIL_SUFFIX="true" if fail_suffix else "false")
    async with serving(Receiver()) as receiver:
        definitions = [
            job("ok", ok, interval=5, webhook_url=receiver.url("ok")),
            job("bad", bad, interval=5, webhook_url=receiver.url("bad")),
        ]
        runtime = make_runtime(metrics, definitions, webhook=SocketPinger(), settings=settings)
        async with running(runtime):
            await wait_for(lambda: f"/ping/{TOKEN}-ok" in receiver.path_set())
            await wait_for(lambda: sample(metrics, RUNS, job_name="bad", status="failed") == 1)
            if fail_suffix:
                await wait_for(lambda: f"/ping/{TOKEN}-bad/fail" in receiver.path_set())
            else:
                await anyio.sleep(0.2)
        expected = {f"/ping/{TOKEN}-ok"} | ({f"/ping/{TOKEN}-bad/fail"} if fail_suffix else set())
        assert {path_of(p) for p in receiver.paths} == expected
        assert all(uuid.UUID(rid_of(p)).version == 4 for p in receiver.paths)


@pytest.mark.anyio
async def test_hanging_receiver_delays_neither_next_runs_nor_shutdown_beyond_grace(metrics: Metrics) -> None:
    async def ok(ctx: JobContext) -> None:
        ctx.heartbeat()

    pinger = SocketPinger()
    settings = fast_settings(SHUTDOWN_GRACE_SECONDS="0.5", UPTIME_WEBHOOK_START="true")
    async with serving(Receiver(hang=True)) as receiver:
        runtime = make_runtime(
            metrics, [job("ok", ok, interval=0.05, webhook_url=receiver.url("ok"))], webhook=pinger, settings=settings
        )
        started = time.monotonic()
        async with running(runtime):
            # Runs keep their 50 ms cadence although every ping hangs.
            await wait_for(lambda: sample(metrics, RUNS, job_name="ok", status="success") >= 6, timeout=1.5)
            assert time.monotonic() - started < 1.5
            assert len(receiver.paths) >= 3  # pings were sent and are hanging
            shutdown_started = time.monotonic()
        shutdown = time.monotonic() - shutdown_started
    # Shutdown awaited the hanging pings, but only for the grace period (0.5 s), not their 10 s bound.
    assert 0.3 <= shutdown < 2.0
    assert sample(metrics, RUNS, job_name="ok", status="skipped") == 0


@pytest.mark.anyio
async def test_webhook_url_never_appears_in_logs_or_responses(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    async def ok(ctx: JobContext) -> None:
        ctx.heartbeat()

    async def boom(ctx: JobContext) -> None:
        raise RuntimeError("upstream said no")

    async def hangs(ctx: JobContext) -> None:
        await anyio.sleep(10)

    settings = fast_settings(UPTIME_WEBHOOK_FAIL_SUFFIX="true", SHUTDOWN_GRACE_SECONDS="0.2")
    with caplog.at_level(logging.DEBUG):
        async with serving(Receiver()) as receiver:
            # Also a receiver that is down (connection refused) and one that hangs.
            definitions = [
                job("ok", ok, interval=0.05, webhook_url=receiver.url("ok")),
                job("boom", boom, interval=0.05, webhook_url=receiver.url("boom")),
                job("down", ok, interval=0.05, webhook_url=f"http://127.0.0.1:1/ping/{TOKEN}-down"),
                job("slow", hangs, interval=0.05, timeout=0.1, stall_after=0.05, webhook_url=receiver.url("slow")),
            ]
            runtime = make_runtime(metrics, definitions, webhook=SocketPinger(), settings=settings)
            async with running(runtime):
                await wait_for(lambda: sample(metrics, RUNS, job_name="slow", status="timeout") >= 2)
                await wait_for(lambda: f"/ping/{TOKEN}-boom/fail" in receiver.path_set())
                report = runtime.report()
    assert f"/ping/{TOKEN}-slow/fail" in receiver.path_set()
    assert TOKEN not in repr(definitions)
    assert TOKEN not in str(report)
    assert any("down" in r.getMessage() for r in caplog.records)  # the refused ping was logged, without URL
    assert not [r.getMessage() for r in caplog.records if TOKEN in r.getMessage() or "127.0.0.1:" in r.getMessage()]


@pytest.mark.anyio
async def test_pings_work_again_after_the_scheduler_restarts(metrics: Metrics) -> None:
    """Leadership lost and regained: the shutdown bound of the first run must not cut the second run's pings."""
    runs = 0

    async def ok(ctx: JobContext) -> None:
        nonlocal runs
        runs += 1

    async with serving(Receiver()) as receiver:
        runtime = make_runtime(
            metrics,
            [job("ok", ok, interval=0.05, webhook_url=receiver.url("ok"))],
            webhook=SocketPinger(),
            settings=fast_settings(SHUTDOWN_GRACE_SECONDS="0.01"),
        )
        async with running(runtime):
            await wait_for(lambda: len(receiver.paths) >= 1)
        await anyio.sleep(0.05)  # past the first run's shutdown bound
        first = len(receiver.paths)
        async with running(runtime):
            await wait_for(lambda: len(receiver.paths) >= first + 2)


@pytest.mark.anyio
async def test_start_and_end_pings_share_a_run_id_and_suffixes_go_before_the_query(metrics: Metrics) -> None:
    """healthchecks.io convention with the production WebhookClient: /start, then the end ping, same rid."""
    runs = {"ok": 0, "bad": 0}

    async def ok(ctx: JobContext) -> None:
        runs["ok"] += 1
        ctx.item_succeeded()

    async def bad(ctx: JobContext) -> None:
        runs["bad"] += 1
        ctx.item_failed("http_5xx")

    settings = fast_settings(UPTIME_WEBHOOK_FAIL_SUFFIX="true", UPTIME_WEBHOOK_START="true")
    async with serving(Receiver()) as receiver, httpx.AsyncClient() as http:
        definitions = [
            job("ok", ok, interval=0.3, webhook_url=receiver.url("ok") + "?k=v%20w"),
            job("bad", bad, interval=5, webhook_url=receiver.url("bad") + "/?k=1"),
        ]
        pinger = WebhookClient(http, metrics)
        runtime = make_runtime(metrics, definitions, webhook=pinger, settings=settings)
        async with running(runtime):
            await wait_for(lambda: len([p for p in receiver.paths if "-ok?" in p]) >= 2)
            await wait_for(lambda: any("-bad/fail?" in p for p in receiver.paths))
    ok_pings = [p for p in receiver.paths if f"{TOKEN}-ok" in p]
    bad_pings = [p for p in receiver.paths if f"{TOKEN}-bad" in p]
    by_rid: dict[str, list[str]] = {}
    for target in ok_pings:
        assert urlsplit(target).query.startswith("k=v%20w&rid=")  # the existing query is kept as it was
        by_rid.setdefault(rid_of(target), []).append(path_of(target))
    finished = [paths for paths in by_rid.values() if len(paths) == 2]
    assert len(finished) >= 2  # one rid per run, different runs different rids
    for paths in finished:
        assert paths == [f"/ping/{TOKEN}-ok/start", f"/ping/{TOKEN}-ok"]  # start first, then the end ping
    assert [path_of(p) for p in bad_pings[:2]] == [f"/ping/{TOKEN}-bad/start", f"/ping/{TOKEN}-bad/fail"]
    assert rid_of(bad_pings[0]) == rid_of(bad_pings[1])
    assert urlsplit(bad_pings[1]).query == f"k=1&rid={rid_of(bad_pings[1])}"
    # Counted as external API calls (and nothing failed).
    assert sample(metrics, "icy_backend_external_api_calls_total", api_name="uptime_webhook", status="success") == len(
        receiver.paths
    )
    assert sample(metrics, "icy_backend_external_api_calls_total", api_name="uptime_webhook", status="error") == 0
    for kind in ("start", "success", "fail"):
        assert (
            sample(
                metrics,
                "icy_backend_external_api_duration_seconds_count",
                api_name="uptime_webhook",
                endpoint=kind,
                status="success",
            )
            >= 1
        ), kind
