"""The order of our middleware, outermost first.

admission control → errors → metrics → CORS → body limit → API-key auth → (Starlette's exception middleware) →
router. Admission control is outermost: refusing a request under overload must cost next to nothing, and probes
and scrapes pass it untouched (SPEC §5).
Errors is outermost so a failure anywhere becomes a 500 envelope; metrics sits inside it so a raising handler is
recorded as 500 and the request is still answered; CORS precedes auth so preflights and 401s carry CORS headers.
"""

from __future__ import annotations

from starlette.middleware import Middleware

from icy_backend.metrics.families import Metrics
from icy_backend.metrics.middleware import HttpMetricsMiddleware
from icy_backend.middleware.admission import AdmissionControlMiddleware
from icy_backend.middleware.auth import ApiKeyMiddleware
from icy_backend.middleware.body_limit import BodyLimitMiddleware
from icy_backend.middleware.cors import CORSMiddleware
from icy_backend.middleware.errors import ErrorEnvelopeMiddleware
from icy_backend.settings import Settings


def middleware_stack(settings: Settings, metrics: Metrics) -> list[Middleware]:
    stack = [
        Middleware(AdmissionControlMiddleware, limit=settings.MAX_CONCURRENT_REQUESTS, metrics=metrics),
        Middleware(ErrorEnvelopeMiddleware),
        Middleware(HttpMetricsMiddleware, metrics=metrics),
    ]
    origins = settings.allowed_origins
    if origins:  # fix: an empty list used to 500 every request; now it simply means "no CORS"
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Accept"],
                max_age=600,
            )
        )
    stack.append(Middleware(BodyLimitMiddleware))
    if settings.is_prod and settings.API_KEY is not None:
        stack.append(Middleware(ApiKeyMiddleware, api_key=settings.API_KEY.get_secret_value()))
    return stack
