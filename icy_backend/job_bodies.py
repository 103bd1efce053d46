"""The five job bodies of SPEC §8, built from the app's parts (the scheduler runs them)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.factory import Clients
from icy_backend.domain.oracle import OracleService
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings
from jobs.definition import JobBody
from jobs.indexers import make_indexer_jobs
from jobs.payouts import make_payout_job
from jobs.swap_requests import make_swap_request_job


def build_job_bodies(
    settings: Settings, metrics: Metrics, engine: AsyncEngine, clients: Clients, oracle: OracleService
) -> dict[str, JobBody]:
    return {
        # The price-outlier hold compares Swap events with the complete-figures pricing ratio (SPEC §9).
        **make_indexer_jobs(engine, clients, settings, metrics, oracle.pricing_ratio),
        "swap_request_processing": make_swap_request_job(engine, clients, settings, metrics, oracle),
        "btc_pending_transaction_processing": make_payout_job(engine, clients, settings, metrics),
    }
