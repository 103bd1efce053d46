"""``GET /api/v1/health/jobs`` (SPEC §5): job statuses from memory, no I/O, answers in well under 100 ms."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icy_backend.http.responses import JSONBody
from jobs.status import rfc3339

NO_STORE = {"Cache-Control": "no-store"}


async def jobs_health(request: Request) -> Response:
    started = time.perf_counter()
    runtime = getattr(request.state, "jobs", None)
    if runtime is None:  # the job runtime is not wired (yet): nobody runs jobs
        body: dict[str, Any] = {"status": "unhealthy", "role": None, "jobs": {}, "summary": {}}
        code = 503
    else:
        report = runtime.report()
        body = {"status": report.status, "role": runtime.role, "jobs": report.jobs, "summary": report.summary}
        code = report.http_status
    body = {
        "status": body["status"],
        "timestamp": rfc3339(time.time()),
        "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
        **{k: body[k] for k in ("role", "jobs", "summary")},
    }
    return JSONBody(body, status_code=code, headers=NO_STORE)


routes: list[BaseRoute] = [Route("/api/v1/health/jobs", jobs_health, methods=["GET"])]
