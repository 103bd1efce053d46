"""The five jobs of SPEC §8 and how their settings are derived from configuration."""

from __future__ import annotations

from collections.abc import Mapping

from icy_backend.settings import JOB_WEBHOOK_ENV, Settings
from jobs.definition import JobBody, JobDefinition

INDEXER_JOBS = ("btc_transaction_indexing", "icy_transaction_indexing", "icy_swap_transaction_indexing")
PROCESSOR_JOBS = ("swap_request_processing", "btc_pending_transaction_processing")
JOB_NAMES: tuple[str, ...] = INDEXER_JOBS + PROCESSOR_JOBS
"""The five job names, kept from the old service."""

assert set(JOB_NAMES) == set(JOB_WEBHOOK_ENV), "job names and webhook variables must agree"


def build_job_definitions(settings: Settings, bodies: Mapping[str, JobBody]) -> list[JobDefinition]:
    """One definition per given body, in :data:`JOB_NAMES` order; every job is critical (SPEC §5).

    Indexers time out after ``INDEXER_TIMEOUT``, processors after ``PROCESSOR_TIMEOUT``; all run every
    ``INDEX_INTERVAL`` and stall after ``JOB_STALL_AFTER`` without a heartbeat. A name that is not one of the
    five raises ``ValueError`` (a typo would otherwise silently disable a job).
    """
    unknown = sorted(set(bodies) - set(JOB_NAMES))
    if unknown:
        raise ValueError(f"unknown job names: {', '.join(unknown)}")
    return [
        JobDefinition(
            name=name,
            interval=settings.INDEX_INTERVAL,
            timeout=settings.INDEXER_TIMEOUT if name in INDEXER_JOBS else settings.PROCESSOR_TIMEOUT,
            stall_after=settings.JOB_STALL_AFTER,
            critical=True,
            webhook_url=settings.webhook_url(name),
            run=bodies[name],
        )
        for name in JOB_NAMES
        if name in bodies
    ]
