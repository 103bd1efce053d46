"""Shared fixtures: the anyio backend, settings for tests, and a real PostgreSQL database when reachable.

Session-wide: every transaction any Esplora simulator accepts during the session (in-process or an
``icy-backend simulate`` subprocess) is recorded and re-verified at the end with an independent library
(``tests/btc_verify.py``, bitcoinlib); one that does not verify fails the session.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from icy_backend.sim.esplora_chain import RECORD_ENV


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    return free_closed_port()


@pytest.fixture(scope="session", autouse=True)
def _reverify_simulator_transactions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    path = tmp_path_factory.mktemp("btc-verify") / "accepted.jsonl"
    previous = os.environ.get(RECORD_ENV)
    os.environ[RECORD_ENV] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = previous
    if not path.exists():
        return
    from tests.btc_verify import verify_record_file

    count, failures = verify_record_file(path)
    if failures:
        pytest.fail(
            f"{len(failures)} of {count} simulator-accepted transactions fail independent re-verification:\n"
            + "\n".join(failures[:20])
        )
