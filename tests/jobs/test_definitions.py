"""The five job definitions derived from settings."""

from __future__ import annotations

import pytest

from jobs.context import JobContext
from jobs.definition import JobDefinition
from jobs.definitions import JOB_NAMES, build_job_definitions
from tests.jobs.conftest import fast_settings, job, noop

SECRET_URL = "https://hc-ping.example/7f1c-secret-uuid"


def test_build_job_definitions_uses_the_configured_intervals_timeouts_and_webhooks() -> None:
    settings = fast_settings(
        INDEX_INTERVAL="2m",
        INDEXER_TIMEOUT="10m",
        PROCESSOR_TIMEOUT="15m",
        JOB_STALL_AFTER="45s",
        PROCESS_SWAP_REQUESTS_UPTIME_WEBHOOK_URL=SECRET_URL,
    )
    definitions = build_job_definitions(settings, dict.fromkeys(JOB_NAMES, noop))
    by_name = {d.name: d for d in definitions}
    assert [d.name for d in definitions] == list(JOB_NAMES)
    assert JOB_NAMES == (
        "btc_transaction_indexing",
        "icy_transaction_indexing",
        "icy_swap_transaction_indexing",
        "swap_request_processing",
        "btc_pending_transaction_processing",
    )
    for name in JOB_NAMES[:3]:
        assert by_name[name].timeout == 600
    for name in JOB_NAMES[3:]:
        assert by_name[name].timeout == 900
    assert all(d.interval == 120 and d.stall_after == 45 and d.critical for d in definitions)
    assert by_name["swap_request_processing"].webhook_url == SECRET_URL
    assert by_name["btc_transaction_indexing"].webhook_url is None
    assert "secret-uuid" not in repr(definitions)


def test_only_given_bodies_are_scheduled_and_unknown_names_are_refused() -> None:
    settings = fast_settings()
    assert [d.name for d in build_job_definitions(settings, {"icy_transaction_indexing": noop})] == [
        "icy_transaction_indexing"
    ]
    with pytest.raises(ValueError, match="btc_indexing"):
        build_job_definitions(settings, {"btc_indexing": noop})


def test_definition_values_must_be_positive() -> None:
    async def body(ctx: JobContext) -> None:
        return None

    assert isinstance(job("j", body), JobDefinition)
    with pytest.raises(ValueError, match="timeout"):
        job("j", body, timeout=0)
