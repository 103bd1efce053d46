"""The shared outbound-call machinery (SPEC §7): failover, retries, deadline, breaker, metrics, typed errors.

One logical call (``Upstream.call``) is:

    breaker guard  ->  anyio.fail_after(deadline)  ->  attempts over the endpoint list

* The breaker sees one outcome per call; the deadline's ``TimeoutError`` is translated *inside* the guard,
  so a call that runs out of time counts as a failure (a cancellation from outside does not).
* Attempts: the sticky current endpoint first, then the others that are not set aside. A failed endpoint is
  set aside for 5 minutes. Idempotent reads make at most 3 attempts (2 retries), with jittered backoff
  before re-trying an endpoint; a 429 waits for ``Retry-After`` when that fits in the deadline, else the
  call fails with the 429. Non-idempotent calls fail over only when the request provably never left
  (connect phase).
* Metrics: every completed call is counted once in ``external_api_calls_total`` and observed in
  ``external_api_duration_seconds`` with status success / error / timeout / rejected; a call cancelled from
  outside is not counted (it has no outcome). Every timeout (per attempt: connect/read; per call: deadline)
  increments ``external_api_timeouts_total``.
* Logs name the service, the operation, the endpoint's position and the error class, never a URL.
"""

from __future__ import annotations

import email.utils
import errno
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import (
    CircuitOpenError,
    InvalidResponse,
    JsonRpcError,
    NotConfigured,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPStatus,
    UpstreamTimeout,
    error_class,
)
from icy_backend.metrics.families import Metrics

log = logging.getLogger("icy_backend.clients")
# httpx logs every request with its full URL at INFO ("HTTP Request: GET https://…?apikey=…"): RPC keys and
# webhook tokens live in URLs, so keep httpx/httpcore at WARNING whatever the root level is.
for _name in ("httpx", "httpcore"):
    if logging.getLogger(_name).level < logging.WARNING:
        logging.getLogger(_name).setLevel(logging.WARNING)

T = TypeVar("T")

SET_ASIDE_SECONDS = 300.0
MAX_RETRIES = 2
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0


class Endpoints:
    """An ordered endpoint list with a sticky current endpoint and a 5-minute set-aside for failed ones."""

    def __init__(self, urls: list[str], *, set_aside: float = SET_ASIDE_SECONDS) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.set_aside = set_aside
        self._current = 0
        self._failed_until: dict[int, float] = {}

    @property
    def current(self) -> str:
        if not self.urls:
            raise IndexError("no endpoints")
        return self.urls[self._current]

    def order(self) -> list[int]:
        """Indexes to try: current first (cyclic order), skipping set-aside ones unless all are set aside."""
        n = len(self.urls)
        cyclic = [(self._current + k) % n for k in range(n)]
        now = time.monotonic()
        usable = [i for i in cyclic if self._failed_until.get(i, 0.0) <= now]
        return usable or cyclic

    def failed(self, index: int, for_seconds: float | None = None) -> None:
        self._failed_until[index] = time.monotonic() + (self.set_aside if for_seconds is None else for_seconds)

    def succeeded(self, index: int) -> None:
        self._failed_until.pop(index, None)
        self._current = index


@dataclass(frozen=True)
class Request:
    """One HTTP request relative to an endpoint base URL."""

    method: str
    path: str = ""
    params: Mapping[str, str] | None = None
    json: Any = None
    content: str | bytes | None = None
    headers: Mapping[str, str] | None = None


class _Answer(Exception):
    """Internal: an upstream *answer* error that must not be retried or failed over."""

    def __init__(self, error: UpstreamError) -> None:
        self.error = error


def map_transport_error(service: str, op: str, exc: httpx.TransportError) -> UpstreamError:
    """Translate an httpx transport exception into our typed error (no URL in the text)."""
    detail = f"{op}: {type(exc).__name__}"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return UpstreamTimeout(service, "connect", detail)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(service, "read", detail)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamConnectionError(service, detail, refused=_refused(exc))
    return UpstreamConnectionError(service, detail)


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or getattr(cur, "errno", None) == errno.ECONNREFUSED:
            return True
        stack.extend([cur.__cause__, cur.__context__])
        stack.extend(getattr(cur, "exceptions", ()))
    return False


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def response_json(service: str, op: str, response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponse(service, f"{op}: body is not JSON") from None


class Upstream:
    """One upstream service: an injected ``httpx.AsyncClient``, its endpoints, breaker and metrics."""

    def __init__(
        self,
        service: str,
        http: httpx.AsyncClient,
        endpoints: list[str],
        breakers: Breakers,
        metrics: Metrics,
        *,
        deadline: float = 10.0,
    ) -> None:
        self.service = service
        self.http = http
        self.endpoints = Endpoints(endpoints)
        self.breakers = breakers
        self.metrics = metrics
        self.deadline = deadline
        self._calls = {s: metrics.external_calls.labels(service, s) for s in _STATUSES}
        self._timeouts = {k: metrics.external_timeouts.labels(service, k) for k in ("connect", "read", "deadline")}
        self._durations: dict[tuple[str, str], Any] = {}

    # ---- the call pipeline -----------------------------------------------------------------------------

    async def call(
        self,
        op: str,
        request: Request,
        parse: Callable[[httpx.Response], T],
        *,
        idempotent: bool = True,
        accept: frozenset[int] = frozenset(),
    ) -> T:
        """One logical call: breaker, deadline, attempts; ``parse`` turns a 2xx (or ``accept``-ed) answer."""
        _, result = await self.call_indexed(op, request, parse, idempotent=idempotent, accept=accept)
        return result

    async def call_indexed(
        self,
        op: str,
        request: Request,
        parse: Callable[[httpx.Response], T],
        *,
        idempotent: bool = True,
        accept: frozenset[int] = frozenset(),
    ) -> tuple[int, T]:
        """:meth:`call`, also returning the position (0-based) of the endpoint whose answer was parsed."""
        if not self.endpoints.urls:
            raise NotConfigured(self.service, "no endpoint configured")
        started = time.perf_counter()
        status: str | None = None
        try:
            async with self.breakers.guard(self.service):
                try:
                    with anyio.fail_after(self.deadline):
                        result = await self._attempts(op, request, parse, idempotent, accept)
                except TimeoutError:
                    self._timeouts["deadline"].inc()
                    raise UpstreamTimeout(self.service, "deadline", f"{op}: deadline") from None
            status = "success"
            return result
        except CircuitOpenError:
            status = "rejected"
            raise
        except UpstreamTimeout:
            status = "timeout"
            raise
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            status = "error"
            raise
        finally:
            if status is not None:
                self._record(op, status, time.perf_counter() - started)

    def _record(self, op: str, status: str, seconds: float) -> None:
        self._calls[status].inc()
        child = self._durations.get((op, status))
        if child is None:
            child = self._durations[(op, status)] = self.metrics.external_duration.labels(self.service, op, status)
        child.observe(seconds)

    async def _attempts(
        self,
        op: str,
        request: Request,
        parse: Callable[[httpx.Response], T],
        idempotent: bool,
        accept: frozenset[int],
    ) -> tuple[int, T]:
        max_attempts = 1 + MAX_RETRIES if idempotent else len(self.endpoints.urls)
        deadline_at = anyio.current_time() + self.deadline
        order = self.endpoints.order()
        last_error: UpstreamError | None = None
        wait = 0.0
        for attempt in range(max_attempts):
            index = order[attempt % len(order)]
            if attempt >= len(order):
                # Back to an endpoint that already failed in this call: back off, or honour Retry-After.
                backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                delay = max(wait, backoff)
                if anyio.current_time() + delay >= deadline_at:
                    break
                await anyio.sleep(delay)
            try:
                return index, await self._attempt(op, index, request, parse, accept)
            except _Answer as answer:
                raise answer.error from None
            except UpstreamError as err:
                last_error = err
                if isinstance(err, UpstreamTimeout):
                    self._timeouts[err.kind].inc()
                retry_after = err.retry_after if isinstance(err, UpstreamHTTPStatus) else None
                self.endpoints.failed(index, retry_after)
                log.warning(
                    "%s %s failed on endpoint #%d (attempt %d): %s",
                    self.service,
                    op,
                    index + 1,
                    attempt + 1,
                    error_class(err),
                )
                if not idempotent and getattr(err, "request_sent", True):
                    break  # it may have been processed: never send it again
                wait = max(wait, retry_after or 0.0)
                wraps = attempt + 1 >= len(order)
                if retry_after is not None and wraps and anyio.current_time() + wait >= deadline_at:
                    break  # Retry-After does not fit in the deadline: give up with the 429
        assert last_error is not None
        raise last_error

    async def _attempt(
        self,
        op: str,
        index: int,
        request: Request,
        parse: Callable[[httpx.Response], T],
        accept: frozenset[int],
    ) -> T:
        try:
            response = await self._send(self.endpoints.urls[index], request)
        except httpx.TransportError as exc:
            err = map_transport_error(self.service, op, exc)
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                err.request_sent = False  # type: ignore[attr-defined]
            raise err from None
        code = response.status_code
        if not (200 <= code < 300 or code in accept):
            err = self.status_error(response)
            if not err.is_failure:
                raise _Answer(err)
            raise err
        try:
            result = parse(response)
        except JsonRpcError as err:
            if not err.is_failure:
                raise _Answer(err) from None
            raise
        except UpstreamError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise InvalidResponse(self.service, f"{op}: unexpected body") from None
        self.endpoints.succeeded(index)
        return result

    async def _send(self, base_url: str, request: Request) -> httpx.Response:
        return await self.http.request(
            request.method,
            base_url + request.path,
            params=request.params,
            json=request.json,
            content=request.content,
            headers=request.headers,
        )

    def status_error(self, response: httpx.Response) -> UpstreamHTTPStatus:
        """The typed error for a non-accepted HTTP status (subclasses may specialise)."""
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return UpstreamHTTPStatus(self.service, response.status_code, retry_after)

    # ---- probes ----------------------------------------------------------------------------------------

    async def probe_request(self, request: Request, parse: Callable[[httpx.Response], T]) -> T:
        """One direct request to the current endpoint: no breaker, no retry, no failover, no metrics."""
        if not self.endpoints.urls:
            raise NotConfigured(self.service, "no endpoint configured")
        for attempt in (1, 2):
            try:
                response = await self._send(self.endpoints.current, request)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # A pooled keep-alive connection the server closed as we reused it: the upstream is not down.
                # One fresh attempt tells the two apart (probes are cheap idempotent reads).
                if attempt == 2:
                    raise map_transport_error(self.service, "probe", exc) from None
            except httpx.TransportError as exc:
                raise map_transport_error(self.service, "probe", exc) from None
        if not 200 <= response.status_code < 300:
            raise self.status_error(response)
        try:
            return parse(response)
        except UpstreamError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise InvalidResponse(self.service, "probe: unexpected body") from None


_STATUSES = ("success", "error", "timeout", "rejected")
