"""Uptime (dead-man's-switch) webhooks: ping and report, never raise, never log the URL.

Every ping is counted in the external-API metrics as ``api_name="uptime_webhook"``, with the ping kind
(``start``, ``success``, ``fail``) as the ``endpoint`` label and status success / error / timeout. A ping cancelled
from outside (the shutdown bound) is not counted: it has no outcome (as for every other client).
"""

from __future__ import annotations

import logging
import time

import anyio
import httpx

from icy_backend.clients.errors import error_class
from icy_backend.clients.http import map_transport_error
from icy_backend.metrics.families import Metrics

log = logging.getLogger("icy_backend.clients.webhook")

WEBHOOK_DEADLINE = 10.0
API_NAME = "uptime_webhook"
PING_KINDS = ("start", "success", "fail")


class WebhookClient:
    """``await ping(url, kind)`` → whether the webhook answered 2xx within 10 s. The URL is a secret."""

    def __init__(self, http: httpx.AsyncClient, metrics: Metrics, *, deadline: float = WEBHOOK_DEADLINE) -> None:
        self.http = http
        self.metrics = metrics
        self.deadline = deadline
        self._calls = {s: metrics.external_calls.labels(API_NAME, s) for s in ("success", "error", "timeout")}
        self._timeouts = {k: metrics.external_timeouts.labels(API_NAME, k) for k in ("connect", "read", "deadline")}

    async def ping(self, url: str, kind: str = "success") -> bool:
        endpoint = kind if kind in PING_KINDS else "success"
        started = time.perf_counter()
        reason: str
        try:
            with anyio.fail_after(self.deadline):
                response = await self.http.get(url)
            if 200 <= response.status_code < 300:
                self._record(endpoint, "success", started)
                return True
            reason = "http_5xx" if response.status_code >= 500 else "http_4xx"
        except TimeoutError:
            reason = "timeout"
            self._timeouts["deadline"].inc()
        except httpx.TransportError as exc:
            reason = error_class(map_transport_error(API_NAME, "ping", exc))
            if isinstance(exc, httpx.TimeoutException):
                reason = "timeout"
                self._timeouts["connect" if isinstance(exc, httpx.ConnectTimeout) else "read"].inc()
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
            reason = "invalid_url"
        except Exception as exc:  # a webhook must never break a job
            reason = type(exc).__name__
        self._record(endpoint, "timeout" if reason == "timeout" else "error", started)
        log.warning("uptime webhook failed: %s (%s ping)", reason, endpoint)
        return False

    def _record(self, endpoint: str, status: str, started: float) -> None:
        self._calls[status].inc()
        self.metrics.external_duration.labels(API_NAME, endpoint, status).observe(time.perf_counter() - started)
