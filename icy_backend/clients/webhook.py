"""Uptime (dead-man's-switch) webhooks: fire and report, never raise, never log the URL."""

from __future__ import annotations

import logging

import anyio
import httpx

from icy_backend.clients.errors import error_class
from icy_backend.clients.http import map_transport_error
from icy_backend.metrics.families import Metrics

log = logging.getLogger("icy_backend.clients.webhook")

WEBHOOK_DEADLINE = 10.0


class WebhookClient:
    """``await ping(url)`` → whether the webhook answered 2xx within 10 s. The URL is a secret."""

    def __init__(self, http: httpx.AsyncClient, metrics: Metrics, *, deadline: float = WEBHOOK_DEADLINE) -> None:
        self.http = http
        self.metrics = metrics
        self.deadline = deadline

    async def ping(self, url: str) -> bool:
        reason: str
        try:
            with anyio.fail_after(self.deadline):
                response = await self.http.get(url)
            if 200 <= response.status_code < 300:
                return True
            reason = "http_5xx" if response.status_code >= 500 else "http_4xx"
        except TimeoutError:
            reason = "timeout"
        except httpx.TransportError as exc:
            reason = error_class(map_transport_error("webhook", "ping", exc))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
            reason = "invalid_url"
        except Exception as exc:  # a webhook must never break a job
            reason = type(exc).__name__
        log.warning("uptime webhook failed: %s", reason)
        return False
