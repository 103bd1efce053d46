"""Property-based fuzzing of the running service from its own ``/openapi.json`` (schemathesis).

Every operation gets a bounded number of generated requests (``ICY_E2E_FUZZ_EXAMPLES``, default 25; no
shrinking), the whole run is bounded in time (``ICY_E2E_FUZZ_SECONDS``, default 80), and every response is
checked: no 5xx (``not_a_server_error``) and conformance to the documented response schema. Failures are
collected per operation and reported together. The service runs in sandbox mode (in-process simulators, SQLite).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ci import require_module
from tests.e2e.server import serve

schemathesis = require_module("schemathesis", "schemathesis is not installed (test extra)")

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("ICY_E2E_FUZZ_EXAMPLES", "25"))
BUDGET_SECONDS = float(os.environ.get("ICY_E2E_FUZZ_SECONDS", "80"))


def _fuzz(operation: Any, base_url: str, calls: dict[str, int]) -> None:
    """Up to ``MAX_EXAMPLES`` generated requests for one operation; raises on the first failed check."""
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error, response_schema_conformance

    label = operation.label

    @settings(
        max_examples=MAX_EXAMPLES,
        phases=[Phase.explicit, Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        calls[label] += 1
        case.call_and_validate(base_url=base_url, checks=[not_a_server_error, response_schema_conformance], timeout=10)

    run()


def test_openapi_fuzz(tmp_path: Path) -> None:

    with serve(tmp_path, {"SANDBOX_BLOCK_TIME": "2"}, ready_path="/readyz") as server:
        doc = httpx.get(server.base_url + "/openapi.json", timeout=5)
        if doc.status_code != 200:
            pytest.skip(f"/openapi.json is not served yet ({doc.status_code})")
        schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert operations, "the OpenAPI document lists no operation"
        failures: dict[str, str] = {}
        calls: dict[str, int] = {}
        skipped: list[str] = []
        started = time.monotonic()
        for operation in operations:
            label = operation.label
            if time.monotonic() - started > BUDGET_SECONDS:
                skipped.append(label)
                continue
            calls[label] = 0

            try:
                _fuzz(operation, server.base_url, calls)
            except Exception as exc:
                failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
        elapsed = time.monotonic() - started
        log = server.log()
    summary = f"{len(calls)} operations, {sum(calls.values())} requests in {elapsed:.1f} s; skipped (budget): {skipped}"
    print(summary)
    assert not failures, summary + "\n" + "\n\n".join(f"{k}: {v}" for k, v in failures.items())
    assert not skipped, summary
    assert "Traceback" not in log
