"""Build deploy/grafana/icy-backend.json (run: python deploy/grafana/build_dashboard.py).

The JSON is generated so panel ids, grid positions and datasources stay consistent; edit this file, re-run it
and commit both. tests/deploy/test_dashboard.py checks that the committed JSON is this script's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEL = 'job="icy-backend", instance=~"$instance"'
RATE = "$__rate_interval"
OUTPUT = Path(__file__).with_name("icy-backend.json")

HEALTH_MAPPINGS = [
    {"type": "value", "options": {"1": {"text": "healthy", "color": "green", "index": 0}}},
    {"type": "value", "options": {"0.5": {"text": "degraded", "color": "orange", "index": 1}}},
    {"type": "value", "options": {"0": {"text": "unhealthy", "color": "red", "index": 2}}},
]
BREAKER_MAPPINGS = [
    {"type": "value", "options": {"0": {"text": "closed", "color": "green", "index": 0}}},
    {"type": "value", "options": {"1": {"text": "half-open", "color": "orange", "index": 1}}},
    {"type": "value", "options": {"2": {"text": "open", "color": "red", "index": 2}}},
]
LEADER_MAPPINGS = [
    {"type": "value", "options": {"1": {"text": "leader", "color": "green", "index": 0}}},
    {"type": "value", "options": {"0": {"text": "standby", "color": "blue", "index": 1}}},
]


def quantiles(metric: str, by: str, window: str = RATE) -> list[tuple[str, str]]:
    """p50/p95/p99 targets of a histogram, by `by`."""
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}}}[{window}])))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


class Dashboard:
    """Lays panels out left to right, 24 columns wide, rows stacked."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        width: int = 8,
        height: int = 8,
        description: str = "",
        mappings: list[dict[str, Any]] | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> None:
        if self.x + width > 24:
            self._newline()
        defaults: dict[str, Any] = {"unit": unit}
        if mappings:
            defaults["mappings"] = mappings
        if minimum is not None:
            defaults["min"] = minimum
        if maximum is not None:
            defaults["max"] = maximum
        panel: dict[str, Any] = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
            if kind == "timeseries"
            else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            "targets": [
                {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def build() -> dict[str, Any]:
    d = Dashboard()
    api = 'path!~"/healthz|/livez|/readyz|/metrics|/api/v1/health/.*"'

    d.row("HTTP")
    d.panel(
        "Request rate by route",
        [(f"sum by (path) (rate(icy_backend_http_requests_total{{{SEL}}}[{RATE}]))", "{{path}}")],
        unit="reqps",
    )
    d.panel(
        "5xx error ratio (API routes)",
        [
            (
                f'sum(rate(icy_backend_http_requests_total{{{SEL}, status=~"5..", {api}}}[{RATE}]))'
                f" / sum(rate(icy_backend_http_requests_total{{{SEL}, {api}}}[{RATE}]))",
                "5xx ratio",
            )
        ],
        unit="percentunit",
        description="Health endpoints are excluded: they answer 503 by design when a dependency is down.",
    )
    d.panel(
        "Requests in flight",
        [(f"sum by (method) (icy_backend_http_requests_in_flight{{{SEL}}})", "{{method}}")],
    )
    d.panel(
        "Latency p50 / p95 / p99 by route",
        quantiles("icy_backend_http_request_duration_seconds", "path"),
        unit="s",
        width=16,
    )
    d.panel(
        "Response size p95 by route",
        [
            (
                "histogram_quantile(0.95, sum by (le, path) "
                f"(rate(icy_backend_http_response_size_bytes_bucket{{{SEL}}}[{RATE}])))",
                "{{path}}",
            )
        ],
        unit="bytes",
    )

    d.row("Health checks")
    d.panel(
        "Check status (worst replica)",
        [(f"min by (check) (icy_backend_health_check_status{{{SEL}}})", "{{check}}")],
        kind="stat",
        mappings=HEALTH_MAPPINGS,
        minimum=0,
        maximum=1,
        description="1 healthy, 0.5 degraded, 0 unhealthy. Refreshed by probes and by every scrape.",
    )
    d.panel(
        "Check duration p95",
        [
            (
                "histogram_quantile(0.95, sum by (le, check) "
                f"(rate(icy_backend_health_check_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                "{{check}}",
            )
        ],
        unit="s",
    )
    d.panel(
        "Check runs by result",
        [(f"sum by (check, status) (rate(icy_backend_health_checks_total{{{SEL}}}[{RATE}]))", "{{check}} {{status}}")],
        unit="ops",
    )

    d.row("Freshness")
    d.panel(
        "Health result age (oldest replica)",
        [
            (
                f"max by (check) (time() - icy_backend_health_check_last_checked_timestamp_seconds{{{SEL}}})",
                "{{check}}",
            )
        ],
        unit="s",
        description="Seconds since each check's last result was taken. Every scrape refreshes results older "
        "than their TTL; above 90 s (3 scrape intervals) the health alerts ignore the result and "
        "IcyBackendHealthResultsStale fires.",
    )
    d.panel(
        "Oracle data age (oldest replica)",
        [(f"max by (data_type) (icy_backend_oracle_data_age_seconds{{{SEL}}})", "{{data_type}}")],
        unit="s",
        description="Seconds since each cached oracle value was fetched, computed at scrape time: it keeps growing "
        "while refreshes fail (TTL 300 s; IcyBackendOracleDataStale above 600 s on a replica that is asked).",
    )
    d.panel(
        "Requests refused (overloaded)",
        [(f"sum by (instance) (rate(icy_backend_requests_refused_total{{{SEL}}}[{RATE}]))", "{{instance}}")],
        unit="reqps",
        description="Business requests refused at once because MAX_CONCURRENT_REQUESTS were in flight.",
    )

    d.row("External APIs and circuit breakers")
    d.panel(
        "Calls by outcome",
        [
            (
                f"sum by (api_name, status) (rate(icy_backend_external_api_calls_total{{{SEL}}}[{RATE}]))",
                "{{api_name}} {{status}}",
            )
        ],
        unit="ops",
    )
    d.panel(
        "Call duration p95",
        [
            (
                "histogram_quantile(0.95, sum by (le, api_name) "
                f"(rate(icy_backend_external_api_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                "{{api_name}}",
            )
        ],
        unit="s",
    )
    d.panel(
        "Timeouts by kind",
        [
            (
                f"sum by (api_name, timeout_type) (rate(icy_backend_external_api_timeouts_total{{{SEL}}}[{RATE}]))",
                "{{api_name}} {{timeout_type}}",
            )
        ],
        unit="ops",
    )
    d.panel(
        "Breaker state (worst replica)",
        [(f"max by (api_name) (icy_backend_circuit_breaker_state{{{SEL}}})", "{{api_name}}")],
        kind="stat",
        mappings=BREAKER_MAPPINGS,
        width=12,
    )
    d.panel(
        "Breaker transitions",
        [
            (
                "sum by (api_name, to_state) "
                f"(increase(icy_backend_circuit_breaker_transitions_total{{{SEL}}}[{RATE}]))",
                "{{api_name}} -> {{to_state}}",
            )
        ],
        width=12,
    )

    d.row("Jobs")
    d.panel(
        "Runs by outcome (per 15 min)",
        [
            (
                f"sum by (job_name, status) (increase(icy_backend_background_job_runs_total{{{SEL}}}[15m]))",
                "{{job_name}} {{status}}",
            )
        ],
    )
    d.panel(
        "Run duration p95 (30 min window)",
        [
            (
                "histogram_quantile(0.95, sum by (le, job_name) "
                f"(rate(icy_backend_background_job_duration_seconds_bucket{{{SEL}}}[30m])))",
                "{{job_name}}",
            )
        ],
        unit="s",
    )
    d.panel(
        "Time since last success",
        [
            (
                f"time() - max by (job_name) (icy_backend_background_job_last_success_timestamp_seconds{{{SEL}}} > 0)",
                "{{job_name}}",
            )
        ],
        unit="s",
        description="Alert IcyBackendJobNoRecentSuccess fires above 3 intervals (360 s with INDEX_INTERVAL=2m).",
    )
    d.panel(
        "Active and stalled jobs",
        [
            (f"sum(icy_backend_background_jobs_active{{{SEL}}})", "active"),
            (f"sum(icy_backend_background_jobs_stalled{{{SEL}}})", "stalled"),
        ],
        width=6,
    )
    d.panel(
        "Job timeouts (per hour)",
        [(f"sum by (job_name) (increase(icy_backend_job_timeouts_total{{{SEL}}}[1h]))", "{{job_name}}")],
        width=6,
    )
    d.panel(
        "Pending transactions (leader)",
        [
            (
                "max by (transaction_type) (icy_backend_pending_transactions{"
                f"{SEL}}} and on (job, instance) (icy_backend_job_leader{{{SEL}}} == 1))",
                "{{transaction_type}}",
            )
        ],
        width=6,
        description="Read from the replica holding the leader lock; a former leader keeps a stale value.",
    )
    d.panel(
        "Job leader per replica",
        [(f"icy_backend_job_leader{{{SEL}}}", "{{instance}}")],
        kind="stat",
        mappings=LEADER_MAPPINGS,
        width=6,
        description="Exactly one replica should be leader (or single).",
    )

    d.row("Business")
    d.panel(
        "Oracle and swap operations by outcome",
        [
            (
                "sum by (operation_type, category, status) "
                f"(rate(icy_backend_business_operations_total{{{SEL}}}[{RATE}]))",
                "{{operation_type}} {{category}} {{status}}",
            )
        ],
        unit="ops",
    )
    d.panel(
        "Operation duration p95",
        [
            (
                "histogram_quantile(0.95, sum by (le, operation_type) "
                f"(rate(icy_backend_business_operation_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                "{{operation_type}}",
            )
        ],
        unit="s",
    )
    d.panel(
        "Cache hit ratio",
        [
            (
                f'sum by (cache_type) (rate(icy_backend_cache_operations_total{{{SEL}, operation="hit"}}[{RATE}]))'
                f" / sum by (cache_type) (rate(icy_backend_cache_operations_total{{{SEL}}}[{RATE}]))",
                "{{cache_type}}",
            )
        ],
        unit="percentunit",
        minimum=0,
        maximum=1,
    )
    d.panel(
        "Oracle data age",
        [(f"max by (data_type) (icy_backend_oracle_data_age_seconds{{{SEL}}})", "{{data_type}}")],
        unit="s",
        description="Alert IcyBackendOracleDataStale fires above 600 s.",
    )
    d.panel(
        "Swap operations by outcome",
        [
            (
                f"sum by (operation, status) (rate(icy_backend_swap_operations_total{{{SEL}}}[{RATE}]))",
                "{{operation}} {{status}}",
            )
        ],
        unit="ops",
    )
    d.panel(
        "Indexed transactions (per 15 min)",
        [(f"sum by (chain) (increase(icy_backend_indexed_transactions_total{{{SEL}}}[15m]))", "{{chain}}")],
    )

    d.row("Process")
    d.panel("CPU", [(f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{instance}}")], unit="percentunit")
    d.panel("Resident memory", [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")], unit="bytes")
    d.panel(
        "Version",
        [(f"count by (version) (icy_backend_build_info{{{SEL}}})", "{{version}}")],
        kind="stat",
    )

    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "annotations": {"list": []},
        "description": "icy-backend: HTTP, health checks, upstreams and breakers, jobs, business. docs/operations.md",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": d.panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["icy-backend"],
        "templating": {
            "list": [
                {
                    "name": "DS_PROMETHEUS",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                },
                {
                    "name": "instance",
                    "label": "Instance",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": 'label_values(icy_backend_build_info{job="icy-backend"}, instance)',
                        "refId": "instance",
                    },
                    "definition": 'label_values(icy_backend_build_info{job="icy-backend"}, instance)',
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": "icy-backend",
        "uid": "icy-backend",
        "version": 1,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
