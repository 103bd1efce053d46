"""Sandbox mode: in local with no endpoints, the app runs the simulators in-process and says so loudly."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import anyio
import pytest

from icy_backend.app import create_app
from icy_backend.sandbox import SANDBOX_DB_FILE
from icy_backend.settings import load_settings
from tests.asgi import client_for

pytestmark = pytest.mark.anyio


async def test_sandbox_serves_the_whole_system_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"APP_ENV": "local", "JOB_FIRST_RUN_DELAY": "0.1", "INDEX_INTERVAL": "1"}, env_file=None)
    assert settings.sandbox_enabled
    caplog.set_level(logging.WARNING, logger="icy_backend.sandbox")
    for run in range(2):  # a second start begins from an empty sandbox database again
        async with client_for(create_app(settings)) as client:
            db = sqlite3.connect(tmp_path / SANDBOX_DB_FILE)
            with db:
                markers = db.execute("SELECT count(*) FROM indexer_cursors WHERE name = 'marker'").fetchone()[0]
                assert markers == 0, f"run {run}: the previous run's database was kept"
                db.execute("INSERT INTO indexer_cursors (name, updated_at) VALUES ('marker', '2026-01-01')")
            db.close()
            info = await client.get("/api/v1/swap/info")
            assert info.status_code == 200
            assert info.json()["data"]["satoshi_balance"] == "250000000"
            external = await client.get("/api/v1/health/external")
            assert external.json()["status"] == "healthy"
            with anyio.fail_after(20):
                while True:
                    jobs = (await client.get("/api/v1/health/jobs")).json()
                    if all(j["success_count"] >= 1 for j in jobs["jobs"].values()):
                        break
                    await anyio.sleep(0.2)
            assert sorted(jobs["jobs"]) == sorted(
                [
                    "btc_transaction_indexing",
                    "icy_transaction_indexing",
                    "icy_swap_transaction_indexing",
                    "swap_request_processing",
                    "btc_pending_transaction_processing",
                ]
            )
            assert jobs["role"] == "single"
    assert any("SANDBOX MODE" in r.getMessage() for r in caplog.records)


async def test_no_sandbox_outside_local(tmp_path: Path) -> None:
    settings = load_settings({"APP_ENV": "dev", "SANDBOX": "auto"}, env_file=None)
    assert not settings.sandbox_enabled
    assert not load_settings({"APP_ENV": "staging", "SANDBOX": "on"}, env_file=None).sandbox_enabled
