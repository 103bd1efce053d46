"""promtool tests are fed by series shaped like the real exporter's, and rules see scraped series as tests do.

* Every ``input_series`` of ``deploy/prometheus/tests/*.yml`` names a sample the app exports, with exactly the
  label names the app puts on it (plus the target labels Prometheus adds: job, instance, namespace, pod).
* A promtool test generated from a real ``/metrics`` scrape (the app against the simulators, one upstream
  failing): the scraped health series, with fresh or frozen ``last_checked`` timestamps, fire the upstream alert
  only while fresh, and fire ``IcyBackendHealthResultsStale`` when frozen.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from icy_backend.app import create_app
from icy_backend.metrics import Metrics, make_registry, oracle_age
from icy_backend.settings import load_settings
from icy_backend.sim.combined import Simulators
from icy_backend.sim.faults import Fault
from tests.asgi import client_for
from tests.deploy.conftest import ALERTS, RULE_TESTS

TARGET_LABELS = {"job", "instance", "namespace", "pod"}
_SERIES = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)\{(.*)\}$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$")
CRITICAL = {"database", "blockstream_api", "base_rpc"}


def parse_selector(series: str) -> tuple[str, dict[str, str]]:
    match = _SERIES.match(series.strip())
    if match is None:
        name, labels = series.strip(), ""
    else:
        name, labels = match.groups()
    return name, dict(_LABEL.findall(labels))


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, line
        name, labels, value = match.groups()
        samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def label_names_by_sample(metrics: Metrics, scraped: list[tuple[str, dict[str, str], float]]) -> dict[str, set[str]]:
    """Sample name -> label names, from the families' declarations, checked against the scrape."""
    shapes: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            shapes[sample.name] = set(sample.labels)
    for value in vars(metrics).values():  # labelled families with no child yet
        names = getattr(value, "_labelnames", None)
        kind = getattr(value, "_type", None)
        name = getattr(value, "_name", None)
        if names is None or name is None:
            continue
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
        for suffix in suffixes.get(str(kind), [""]):
            shapes.setdefault(name + suffix, set(names) | ({"le"} if suffix == "_bucket" else set()))
    shapes.setdefault(oracle_age.NAME, set(oracle_age.LABELS))  # a custom collector: no series before a fetch
    for name, labels, _ in scraped:
        if name in shapes:
            assert set(labels) == shapes[name], (name, labels)
    return shapes


async def _scrape(tmp_path: Path) -> tuple[Metrics, str]:
    settings = load_settings(
        {"APP_ENV": "test", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.sqlite3"}, env_file=None
    )
    sims = Simulators(chain_id=settings.chain_id)
    sims.esplora.faults.set(Fault(path="*", status=500))
    metrics = Metrics(make_registry())
    app = create_app(settings, metrics=metrics, transport=httpx.ASGITransport(app=sims.app), run_jobs=False)
    async with client_for(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/api/v1/health/external")).status_code == 503
        await client.get("/api/v1/swap/info")
        text = (await client.get("/metrics")).text
    return metrics, text


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> tuple[Metrics, str]:
    import anyio

    return anyio.run(_scrape, tmp_path_factory.mktemp("scrape"))


def _rule_test_series() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in sorted(RULE_TESTS.glob("*.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            out.extend((path.name, item["series"]) for item in case.get("input_series", []))
    return out


def test_every_rule_test_series_is_shaped_like_the_exporters(scrape: tuple[Metrics, str]) -> None:
    metrics, text = scrape
    shapes = label_names_by_sample(metrics, parse_exposition(text))
    problems = []
    for file, series in _rule_test_series():
        name, labels = parse_selector(series)
        if name == "up":
            continue  # Prometheus' own
        if name not in shapes:
            problems.append(f"{file}: {name} is not exported")
            continue
        own = set(labels) - TARGET_LABELS
        if own != shapes[name]:
            problems.append(f"{file}: {name} has labels {sorted(own)}, the exporter {sorted(shapes[name])}")
    assert problems == []


def _annotations(alert: str, labels: dict[str, str], value: str = "") -> dict[str, str]:
    """The alert's annotations as Prometheus renders them for ``labels`` (the templates used in alerts.yml)."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
    out = {}
    for key, template in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], str(template))
        out[key] = re.sub(r"\{\{ \$value \| humanizeDuration \}\}", value, text)
    return out


def _promtool_case(health: list[tuple[dict[str, str], float]], fresh: bool) -> dict[str, Any]:
    target = {"job": "icy-backend", "instance": "a:8080"}
    series = []
    for labels, value in health:
        selector = ", ".join(f'{k}="{v}"' for k, v in {**target, **labels}.items())
        series.append({"series": f"icy_backend_health_check_status{{{selector}}}", "values": f"{value:g}x20"})
        stamps = "0+30x20" if fresh else "0x20"
        series.append(
            {"series": f"icy_backend_health_check_last_checked_timestamp_seconds{{{selector}}}", "values": stamps}
        )
    unhealthy = sorted(labels["check"] for labels, value in health if value == 0 and labels["check"] in CRITICAL)
    assert unhealthy, "the scrape should hold an unhealthy critical check"
    critical = "IcyBackendCriticalHealthCheckUnhealthy"
    page = [
        {
            "exp_labels": {**target, "check": c, "severity": "page"},
            "exp_annotations": _annotations(critical, {**target, "check": c}),
        }
        for c in unhealthy
    ]
    stale = [
        {
            "exp_labels": {**target, "check": labels["check"], "severity": "ticket"},
            "exp_annotations": _annotations("IcyBackendHealthResultsStale", {**target, **labels}, "8m 0s"),
        }
        for labels, _ in health
    ]
    return {
        "name": f"scraped health series, {'fresh' if fresh else 'frozen'} timestamps",
        "interval": "30s",
        "input_series": series,
        "alert_rule_test": [
            {
                "eval_time": "6m",
                "alertname": "IcyBackendCriticalHealthCheckUnhealthy",
                "exp_alerts": page if fresh else [],
            },
            {"eval_time": "8m", "alertname": "IcyBackendHealthResultsStale", "exp_alerts": [] if fresh else stale},
        ],
    }


def test_rules_fed_by_a_real_scrape(scrape: tuple[Metrics, str], promtool: str, tmp_path: Path) -> None:
    _, text = scrape
    health = [
        (labels, value) for name, labels, value in parse_exposition(text) if name == "icy_backend_health_check_status"
    ]
    checks = {labels["check"] for labels, _ in health}
    assert {"database", "started", "draining", "blockstream_api", "base_rpc", "coingecko", "mochi_pay"} <= checks
    stamps = {lab["check"] for n, lab, _ in parse_exposition(text) if n.endswith("last_checked_timestamp_seconds")}
    assert stamps == checks  # every check's result carries when it was taken
    test_file = tmp_path / "scraped_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(ALERTS)],
                "evaluation_interval": "30s",
                "tests": [_promtool_case(health, fresh=True), _promtool_case(health, fresh=False)],
            }
        )
    )
    done = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
