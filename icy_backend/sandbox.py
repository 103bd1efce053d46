"""Sandbox mode (SPEC §3): the simulators in-process, seeded with demo data, a block ticker, offline.

Only in ``APP_ENV=local`` with no chain endpoints configured (``Settings.sandbox_enabled``); it says so loudly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.domain.sandbox import seed_locked_treasuries
from icy_backend.settings import Settings
from icy_backend.sim.combined import Simulators

log = logging.getLogger("icy_backend.sandbox")

SANDBOX_BASE_URL = "http://sandbox"
# The simulated chains start from genesis on every run, so the default sandbox database starts empty too
# (indexer cursors of an earlier run would point past the new chain's head).
SANDBOX_DB_FILE = Path("icy_backend.sandbox.sqlite3")
# Demo pace: faster than production's 2 minutes unless INDEX_INTERVAL is set explicitly.
SANDBOX_INDEX_INTERVAL = 15.0


class Sandbox:
    """The in-process simulators and the settings that point the service at them."""

    def __init__(self, settings: Settings) -> None:
        # The sandbox seeds the demo locked treasury into its database, so its oracle subtracts it.
        self.sims = Simulators(
            btc_network=settings.btc_network, chain_id=settings.chain_id, service_knows_locked_treasury=True
        )
        self.sims.seed_demo()
        env = self.sims.env_lines(SANDBOX_BASE_URL)
        self.locked_treasury = env.pop("DEMO_LOCKED_TREASURY_ADDRESS")
        values: dict[str, Any] = {name: getattr(settings, name) for name in settings.model_fields_set}
        values["APP_ENV"] = settings.APP_ENV
        values.update(env)
        if "INDEX_INTERVAL" not in settings.model_fields_set:
            values["INDEX_INTERVAL"] = SANDBOX_INDEX_INTERVAL
        if "JOB_FIRST_RUN_DELAY" not in settings.model_fields_set:
            values["JOB_FIRST_RUN_DELAY"] = 2.0
        self.fresh_database = not ({"DATABASE_URL", "DB_HOST"} & settings.model_fields_set)
        if self.fresh_database:
            values["DATABASE_URL"] = f"sqlite+aiosqlite:///./{SANDBOX_DB_FILE}"
        self.settings = Settings.model_validate(values)
        self.block_time = settings.SANDBOX_BLOCK_TIME
        self.transport = httpx.ASGITransport(app=self.sims.app)

    def reset_database(self) -> None:
        """Start the default sandbox database empty (a configured DATABASE_URL is left alone)."""
        if self.fresh_database:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{SANDBOX_DB_FILE}{suffix}").unlink(missing_ok=True)

    async def seed_database(self, engine: AsyncEngine) -> None:
        await seed_locked_treasuries(engine, [self.locked_treasury])

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        log.warning(
            "SANDBOX MODE: no chain endpoints configured in APP_ENV=local, so Bitcoin, Base, prices and Mochi Pay are "
            "SIMULATED in-process with demo data (a block every %.0fs). Nothing here touches a real chain.",
            self.block_time,
        )
        await self.sims.run_ticker(self.block_time, task_status=task_status)
