"""`icy-backend serve` refuses unsafe or contradictory settings before anything starts: exit 2, one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.icy_backend.foundation.test_settings import PROD_ENV


def _serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [sys.executable, "-m", "icy_backend.cli", "serve"],
        cwd=cwd,  # no .env there
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _problem_lines(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert lines[0] == "icy-backend: invalid configuration:", stderr
    return [line.strip() for line in lines[1:]]


def test_prod_on_sqlite_does_not_start(tmp_path: Path) -> None:
    done = _serve({**PROD_ENV, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}"}, tmp_path)
    assert done.returncode == 2
    [line] = _problem_lines(done.stderr)
    assert line.startswith("DATABASE_URL: prod needs PostgreSQL")
    assert not (tmp_path / "x.sqlite3").exists()


def test_contradictions_do_not_start(tmp_path: Path) -> None:
    done = _serve({"APP_ENV": "dev", "JOB_STALL_AFTER": "20m", "BLOCKCHAIN_CONFIRMATIONS": "0"}, tmp_path)
    assert done.returncode == 2
    names = sorted(line.split(":")[0] for line in _problem_lines(done.stderr))
    assert names == ["BLOCKCHAIN_CONFIRMATIONS"]  # field errors first; the rest once the fields are valid
    done = _serve({"APP_ENV": "dev", "JOB_STALL_AFTER": "20m"}, tmp_path)
    assert done.returncode == 2
    assert [line.split(":")[0] for line in _problem_lines(done.stderr)] == ["JOB_STALL_AFTER"]


def test_treasury_address_of_another_key_does_not_start(tmp_path: Path) -> None:
    other = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"  # a valid mainnet P2WPKH address, not the WIF's
    env = {**PROD_ENV, "BLOCKCHAIN_BTC_TREASURY_ADDRESS": other}
    done = _serve(env, tmp_path)
    assert done.returncode == 2
    [line] = _problem_lines(done.stderr)
    assert line.startswith("BLOCKCHAIN_BTC_TREASURY_ADDRESS does not equal the P2WPKH address of BTC_WALLET_WIF")
    assert other not in done.stderr
    assert PROD_ENV["BTC_WALLET_WIF"] not in done.stderr
