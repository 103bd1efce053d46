"""Every metric family of SPEC §6, created on one registry.

Label values never come from user input: see ``docs/metrics.md`` for the allowed values of every label.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from icy_backend import __version__
from icy_backend.metrics.http_collector import HttpCollector
from icy_backend.metrics.oracle_age import OracleAgeCollector
from icy_backend.settings import BREAKER_SERVICES

EXTERNAL_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0)
BUSINESS_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
HEALTH_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

HTTP_METHOD_LABELS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER")

BREAKER_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}
REORG_CHAINS = ("icy", "icy_swap")
# btc_payout counts the payouts not yet taken by a node (pending + broadcasting; held and confirming ones are not);
# btc_broadcasting, btc_confirming and btc_held count those states alone; btc_daily_limit the pending payouts
# waiting for room under BTC_PAYOUT_DAILY_LIMIT_SATS; swap_request the swap requests not yet completed or failed.
PENDING_TRANSACTION_TYPES = (
    "btc_payout",
    "btc_broadcasting",
    "btc_confirming",
    "btc_held",
    "btc_daily_limit",
    "swap_request",
)
PAYOUT_BUMP_OUTCOMES = ("replaced", "capped")
# Reason classes of payouts that end ``failed`` (bounded: the payout state machine only uses these).
PAYOUT_FAILURE_REASONS = (
    "below_dust",
    "invalid_address",
    "wrong_network",
    "script_verify_failed",
    "bad_txns",
    "dust",
    "scriptpubkey",
    "tx_size",
    "other",
)
# Why a pending payout was not sent this run (conditions that clear by themselves).
PAYOUT_DEFERRAL_REASONS = ("daily_limit", "insufficient_funds", "fee_cap_exceeded", "no_fee_estimate", "upstream")


class Metrics:
    """All families on one registry. One instance per app; pass it to clients, checks and jobs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        # HTTP: duration, requests and response size are one lock-free collector (see http_collector).
        self.http_collector = HttpCollector()
        r.register(self.http_collector)
        self.http_in_flight = Gauge(
            "icy_backend_http_requests_in_flight",
            "HTTP requests being served now, by method.",
            ("method",),
            registry=r,
        )
        # The HTTP middleware keeps in-flight counts as plain ints (changed only on the event loop thread) and
        # the gauge reads them at scrape time: two locked gauge updates per request cost more than the rest.
        self.http_in_flight_counts: dict[str, int] = {m: 0 for m in HTTP_METHOD_LABELS}
        for method in HTTP_METHOD_LABELS:
            self.http_in_flight.labels(method).set_function(partial(self.http_in_flight_counts.__getitem__, method))
        # External APIs and breakers
        self.external_duration = Histogram(
            "icy_backend_external_api_duration_seconds",
            "Outbound call duration, by upstream, operation and outcome.",
            ("api_name", "endpoint", "status"),
            buckets=EXTERNAL_DURATION_BUCKETS,
            registry=r,
        )
        self.external_calls = Counter(
            "icy_backend_external_api_calls_total",
            "Outbound calls, by upstream and outcome (success, error, timeout, rejected).",
            ("api_name", "status"),
            registry=r,
        )
        self.external_timeouts = Counter(
            "icy_backend_external_api_timeouts_total",
            "Outbound call timeouts, by upstream and kind (connect, read, deadline).",
            ("api_name", "timeout_type"),
            registry=r,
        )
        self.breaker_state = Gauge(
            "icy_backend_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("api_name",),
            registry=r,
        )
        self.breaker_transitions = Counter(
            "icy_backend_circuit_breaker_transitions_total",
            "Circuit breaker transitions, by upstream and new state.",
            ("api_name", "to_state"),
            registry=r,
        )
        for service in BREAKER_SERVICES:
            self.breaker_state.labels(service).set(0)
        # Jobs
        self.job_duration = Histogram(
            "icy_backend_background_job_duration_seconds",
            "Background job run duration, by job and outcome.",
            ("job_name", "status"),
            buckets=JOB_DURATION_BUCKETS,
            registry=r,
        )
        self.job_runs = Counter(
            "icy_backend_background_job_runs_total",
            "Background job runs, by job and outcome (success, failed, timeout, skipped).",
            ("job_name", "status"),
            registry=r,
        )
        self.jobs_active = Gauge(
            "icy_backend_background_jobs_active", "Background job runs in progress now.", registry=r
        )
        self.jobs_stalled = Gauge(
            "icy_backend_background_jobs_stalled",
            "Background jobs stalled now (running with no heartbeat for stall_after).",
            registry=r,
        )
        self.job_timeouts = Counter(
            "icy_backend_job_timeouts_total",
            "Background job runs cancelled by their timeout.",
            ("job_name",),
            registry=r,
        )
        self.job_last_success = Gauge(
            "icy_backend_background_job_last_success_timestamp_seconds",
            "Unix time of the last successful run of each job.",
            ("job_name",),
            registry=r,
        )
        self.job_leader = Gauge(
            "icy_backend_job_leader",
            "1 when this replica holds the job leader lock (or runs alone), 0 on a standby.",
            registry=r,
        )
        self.pending_transactions = Gauge(
            "icy_backend_pending_transactions",
            "Rows waiting to be processed, by type (btc_payout, btc_broadcasting, btc_confirming, btc_held, ...).",
            ("transaction_type",),
            registry=r,
        )
        for kind in PENDING_TRANSACTION_TYPES:
            self.pending_transactions.labels(kind).set(0)
        # Payouts (SPEC §6): age of the oldest unconfirmed one, fee bumps, failures, deferrals.
        self.payout_oldest_unconfirmed = Gauge(
            "icy_backend_payout_oldest_unconfirmed_seconds",
            "Age of the oldest payout broadcast but not yet completed (0 when none).",
            registry=r,
        )
        self.payout_fee_bumps = Counter(
            "icy_backend_payout_fee_bumps_total",
            "Fee bumps of payouts, by outcome (replaced: a higher-fee candidate was accepted; capped: the fee cap "
            "stopped a bump).",
            ("outcome",),
            registry=r,
        )
        for outcome in PAYOUT_BUMP_OUTCOMES:
            self.payout_fee_bumps.labels(outcome)
        self.payouts_failed = Counter(
            "icy_backend_payouts_failed_total",
            "Payouts that ended failed, by reason class.",
            ("reason",),
            registry=r,
        )
        for reason in PAYOUT_FAILURE_REASONS:
            self.payouts_failed.labels(reason)
        self.payout_deferrals = Counter(
            "icy_backend_payout_deferrals_total",
            "Pending payouts left pending by a run, by reason class (daily_limit, insufficient_funds, ...).",
            ("reason",),
            registry=r,
        )
        for reason in PAYOUT_DEFERRAL_REASONS:
            self.payout_deferrals.labels(reason)
        self.requests_refused = Counter(
            "icy_backend_requests_refused",
            "Business requests refused at once, by reason (overloaded: MAX_CONCURRENT_REQUESTS in flight).",
            ("reason",),
            registry=r,
        )
        self.requests_refused.labels("overloaded")
        # Business
        self.business_operations = Counter(
            "icy_backend_business_operations_total",
            "Oracle and swap operations, by operation, category and outcome.",
            ("operation_type", "category", "status"),
            registry=r,
        )
        self.business_duration = Histogram(
            "icy_backend_business_operation_duration_seconds",
            "Oracle and swap operation duration.",
            ("operation_type", "category", "status"),
            buckets=BUSINESS_DURATION_BUCKETS,
            registry=r,
        )
        self.cache_operations = Counter(
            "icy_backend_cache_operations_total",
            "Cache lookups, by cache and result (hit, miss).",
            ("cache_type", "operation"),
            registry=r,
        )
        # Computed at scrape time from when each value was fetched (see oracle_age).
        self.oracle_data_age = OracleAgeCollector()
        r.register(self.oracle_data_age)
        self.swap_operations = Counter(
            "icy_backend_swap_operations_total",
            "Swap operations, by operation (signature, swap_request, payout) and outcome.",
            ("operation", "status"),
            registry=r,
        )
        self.indexed_transactions = Counter(
            "icy_backend_indexed_transactions_total",
            "Rows inserted by the indexers, by chain (btc, icy, icy_swap).",
            ("chain",),
            registry=r,
        )
        # EVM indexers' reorg handling (SPEC §9 reorgs); every series present at 0 from startup.
        self.indexer_reorgs = Counter(
            "icy_backend_indexer_reorgs_total",
            "Reorgs detected and rolled back by the EVM indexers, by chain (icy, icy_swap).",
            ("chain",),
            registry=r,
        )
        self.indexer_reorg_too_deep = Gauge(
            "icy_backend_indexer_reorg_too_deep",
            "1 while an EVM indexer is stopped by a reorg deeper than BLOCKCHAIN_REORG_DEPTH_MAX, by chain.",
            ("chain",),
            registry=r,
        )
        for chain in REORG_CHAINS:
            self.indexer_reorgs.labels(chain)
            self.indexer_reorg_too_deep.labels(chain).set(0)
        self.payouts_reorged_unattached = Gauge(
            "icy_backend_payouts_reorged_unattached",
            "Payouts flagged reorged whose Swap event has not re-appeared within BLOCKCHAIN_REORG_DEPTH_MAX blocks.",
            registry=r,
        )
        # Health
        self.health_status = Gauge(
            "icy_backend_health_check_status",
            "Last health check result: 1 healthy, 0.5 degraded, 0 unhealthy.",
            ("check",),
            registry=r,
        )
        self.health_duration = Histogram(
            "icy_backend_health_check_duration_seconds",
            "Health check duration.",
            ("check",),
            buckets=HEALTH_DURATION_BUCKETS,
            registry=r,
        )
        self.health_checks = Counter(
            "icy_backend_health_checks_total",
            "Health check runs, by check and result.",
            ("check", "status"),
            registry=r,
        )
        self.health_last_checked = Gauge(
            "icy_backend_health_check_last_checked_timestamp_seconds",
            "Unix time the last result of each health check was taken (the end of its run).",
            ("check",),
            registry=r,
        )
        # Called (on the event loop) by every authorised GET /metrics before rendering; each hook must only
        # start work, never wait for it (the health service starts refreshes of stale results here).
        self.scrape_hooks: list[Callable[[], object]] = []
        # Build
        self.build_info = Gauge(
            "icy_backend_build_info",
            "Always 1; the version label says what is running.",
            ("version",),
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
