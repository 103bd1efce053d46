"""``icy-backend payouts``: list/show/release/reject/hold against SQLite and PostgreSQL, compare-and-set moves,
exit codes, and INFO log lines that name who asked but never an address or an amount."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from icy_backend import payouts_cli
from icy_backend.cli import build_parser
from icy_backend.db.migrate import upgrade
from icy_backend.db.tables import btc_payout_candidates
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.domain import payout_admin
from icy_backend.domain.payout_admin import MoveRefused
from icy_backend.settings import Settings
from tests import pg

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "tb1qsvupz4jl9tv6vdsh8mh6vuxme9u8s3rh0nn2fd"
TOTAL = 123_457


@dataclass
class Db:
    settings: Settings
    engine: AsyncEngine
    url: str


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    yield from pg.private_database("icy_payouts_cli")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'payouts.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Db]:
    url = db_url
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        await upgrade(engine)
    else:
        engine = await pg.emptied_engine(url, pool_size=10, max_overflow=5)
    settings = Settings(_env_file=None, APP_ENV="test", DATABASE_URL=url)
    yield Db(settings, engine, url)
    await engine.dispose()


async def add(engine: AsyncEngine, n: int, status: str, **values: Any) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(T).values(
                swap_transaction_hash="0x" + hashlib.sha256(b"swap %d" % n).hexdigest(),
                swap_event_index=n % 3,
                btc_address=ADDRESS,
                subtotal=TOTAL + 3000,
                service_fee=3000,
                total=TOTAL,
                status=status,
                attempts=0,
                **values,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


async def row(engine: AsyncEngine, payout_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(T).where(T.c.id == payout_id))).mappings().one())


async def cli(db: Db, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["payouts", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = await payouts_cli.run(db.settings, args, out, err)
    return code, out.getvalue(), err.getvalue()


def _move_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == payout_admin.__name__ and r.levelno == logging.INFO]


def _assert_no_money_details(lines: list[str]) -> None:
    for line in lines:
        assert ADDRESS not in line
        assert str(TOTAL) not in line
        assert str(TOTAL + 3000) not in line


# ---- list and show ---------------------------------------------------------------------------------------------


async def test_list_is_a_table_and_filters_by_status(db: Db) -> None:
    held = await add(db.engine, 1, "held", hold_reason="over_limit")
    pending = await add(db.engine, 2, "pending", failure_reason="daily_limit")
    done = await add(db.engine, 3, "completed", btc_transaction_hash="ab" * 32)
    code, out, err = await cli(db, "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATUS",
        "HOLD",
        "FAILURE",
        "TOTAL_SATS",
        "ADDRESS",
        "SWAP_EVENT",
        "ATTEMPTS",
        "CREATED_AT",
    ]
    assert [line.split()[:5] for line in lines[1:-1]] == [
        [str(done), "completed", "-", "-", str(TOTAL)],
        [str(pending), "pending", "-", "daily_limit", str(TOTAL)],
        [str(held), "held", "over_limit", "-", str(TOTAL)],
    ]
    assert lines[-1] == "3 payout(s)"
    assert ADDRESS in out  # shown to the operator, here only

    code, out, _ = await cli(db, "list", "--status", "held")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == [str(held)]


async def test_list_json_has_amounts_as_decimal_strings(db: Db) -> None:
    held = await add(db.engine, 1, "held", hold_reason="price_outlier")
    code, out, _ = await cli(db, "list", "--status", "held", "--json")
    assert code == 0
    [item] = json.loads(out)
    assert item["id"] == held
    assert item["status"] == "held"
    assert item["hold_reason"] == "price_outlier"
    assert item["total"] == str(TOTAL)
    assert item["subtotal"] == str(TOTAL + 3000)
    assert item["btc_address"] == ADDRESS
    assert item["created_at"].endswith("Z")
    assert "raw_tx" not in item
    code, out, _ = await cli(db, "list", "--status", "failed", "--json")
    assert (code, json.loads(out)) == (0, [])


async def test_show_prints_the_payout_and_its_candidates(db: Db) -> None:
    payout_id = await add(db.engine, 4, "confirming", btc_transaction_hash="cd" * 32, raw_tx="00" * 100)
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(btc_payout_candidates).values(
                payout_id=payout_id, txid="cd" * 32, raw_tx="00" * 100, fee=1410, fee_rate="10", broadcast_height=7
            )
        )
    code, out, _ = await cli(db, "show", str(payout_id))
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines() if line and not line.startswith(("candidates", " ")))
    assert fields["status"] == "confirming"
    assert fields["total"] == str(TOTAL)
    assert fields["btc_address"] == ADDRESS
    assert "candidates (1):" in out
    assert "operator actions (0):" in out
    assert f"txid={'cd' * 32}  status=active  fee=1410  fee_rate=10  broadcast_height=7" in out
    assert "00" * 100 not in out  # raw transactions are not printed
    code, out, _ = await cli(db, "show", str(payout_id), "--json")
    shown = json.loads(out)
    assert shown["candidates"][0]["fee"] == "1410"
    assert "raw_tx" not in shown
    assert "raw_tx" not in shown["candidates"][0]


async def test_unknown_id_exits_3(db: Db) -> None:
    for argv in (
        ["show", "999"],
        ["release", "999"],
        ["reject", "999", "--reason", "x"],
        ["hold", "999", "--reason", "x"],
    ):
        code, out, err = await cli(db, *argv)
        assert (code, out) == (3, "")
        assert "no payout with id 999" in err


# ---- moves -----------------------------------------------------------------------------------------------------


async def test_release_moves_held_to_pending_and_logs_who(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    payout_id = await add(db.engine, 5, "held", hold_reason="over_limit")
    code, out, err = await cli(db, "release", str(payout_id), "--actor", "alice")
    assert (code, out, err) == (0, f"payout {payout_id}: held -> pending\n", "")
    after = await row(db.engine, payout_id)
    assert after["status"] == "pending"
    assert after["released_at"] is not None
    assert after["hold_reason"] == "over_limit"  # kept for the record
    assert _move_lines(caplog) == [f"payout {payout_id}: held -> pending (released by alice)"]


async def test_reject_moves_held_to_failed_with_a_class_and_logs_the_reason(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    payout_id = await add(db.engine, 6, "held", hold_reason="price_outlier")
    code, out, _ = await cli(
        db, "reject", str(payout_id), "--reason", "forged\nswap:  signer key leak", "--actor", "bob"
    )
    assert (code, out) == (0, f"payout {payout_id}: held -> failed\n")
    after = await row(db.engine, payout_id)
    assert (after["status"], after["failure_reason"]) == ("failed", "rejected")
    assert after["processed_at"] is not None
    assert _move_lines(caplog) == [
        f"payout {payout_id}: held -> failed (rejected by bob: forged swap: signer key leak)"
    ]


async def test_actor_defaults_to_the_os_user(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    import getpass

    caplog.set_level(logging.INFO)
    payout_id = await add(db.engine, 7, "held", hold_reason="over_limit")
    assert (await cli(db, "release", str(payout_id)))[0] == 0
    assert _move_lines(caplog) == [f"payout {payout_id}: held -> pending (released by {getpass.getuser()})"]


async def test_hold_stops_a_pending_payout_and_release_undoes_it(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    payout_id = await add(db.engine, 8, "pending")
    code, out, _ = await cli(db, "hold", str(payout_id), "--reason", "checking", "--actor", "carol")
    assert (code, out) == (0, f"payout {payout_id}: pending -> held\n")
    assert (await row(db.engine, payout_id))["hold_reason"] == "operator"
    assert (await cli(db, "release", str(payout_id), "--actor", "carol"))[0] == 0
    assert (await row(db.engine, payout_id))["status"] == "pending"
    assert _move_lines(caplog) == [
        f"payout {payout_id}: pending -> held (operator, by carol: checking)",
        f"payout {payout_id}: held -> pending (released by carol)",
    ]


@pytest.mark.parametrize("status", ["pending", "broadcasting", "confirming", "completed", "failed"])
async def test_release_and_reject_refuse_a_payout_that_is_not_held(
    db: Db, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    payout_id = await add(db.engine, 9, status, btc_transaction_hash="ef" * 32)
    before = await row(db.engine, payout_id)
    for argv in (["release", str(payout_id)], ["reject", str(payout_id), "--reason", "no"]):
        code, out, err = await cli(db, *argv)
        assert (code, out) == (1, "")
        assert f"payout {payout_id} is {status}, not held: {argv[0]} refused" in err
    assert await row(db.engine, payout_id) == before  # untouched, updated_at included
    _assert_no_money_details(_move_lines(caplog))


@pytest.mark.parametrize("status", ["held", "broadcasting", "confirming", "completed", "failed"])
async def test_hold_refuses_a_payout_that_is_not_pending(db: Db, status: str) -> None:
    payout_id = await add(db.engine, 10, status)
    before = await row(db.engine, payout_id)
    code, _, err = await cli(db, "hold", str(payout_id), "--reason", "x")
    assert code == 1
    assert f"is {status}, not pending" in err
    assert await row(db.engine, payout_id) == before


async def test_a_payout_that_moved_meanwhile_is_not_moved_again(db: Db) -> None:
    """Two operators: one releases, the processor takes it; the other's reject (from a stale `list`) is refused."""
    payout_id = await add(db.engine, 11, "held", hold_reason="over_limit")
    assert (await cli(db, "release", str(payout_id), "--actor", "alice"))[0] == 0
    async with db.engine.begin() as conn:  # the payout processor claims it
        await conn.execute(update(T).where(T.c.id == payout_id).values(status="broadcasting"))
    code, _, err = await cli(db, "reject", str(payout_id), "--reason", "stale view", "--actor", "bob")
    assert code == 1
    assert "is broadcasting, not held" in err
    assert (await row(db.engine, payout_id))["status"] == "broadcasting"


async def test_concurrent_moves_of_one_held_payout_exactly_one_wins(db: Db) -> None:
    payout_id = await add(db.engine, 12, "held", hold_reason="over_limit")
    results: list[str] = []

    async def attempt(n: int) -> None:
        try:
            if n % 2:
                await payout_admin.release(db.engine, payout_id, f"op{n}")
            else:
                await payout_admin.reject(db.engine, payout_id, f"op{n}", "race")
            results.append("moved")
        except MoveRefused as exc:
            results.append(f"refused:{exc.current}")

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(attempt, n)
    assert results.count("moved") == 1, results
    final = (await row(db.engine, payout_id))["status"]
    assert final in ("pending", "failed")
    assert sorted(results) == sorted(["moved", *[f"refused:{final}"] * 7])


# ---- the command line itself -------------------------------------------------------------------------------------


def _run_cli(env: dict[str, str], *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), "APP_ENV": "test"}
    return subprocess.run(
        [sys.executable, "-m", "icy_backend.cli", "payouts", *argv],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_exit_codes_of_the_real_command(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"
    env = {"DATABASE_URL": url, "LOG_FORMAT": "json", "LOGNAME": "night-shift"}  # LOGNAME: the OS user
    # Not migrated: a database error, said without the URL.
    done = await anyio.to_thread.run_sync(lambda: _run_cli(env, "list", cwd=tmp_path))
    assert done.returncode == 4, done.stderr
    assert "cli.sqlite3" not in done.stderr
    engine = create_async_engine(url)
    await upgrade(engine)
    held = await add(engine, 1, "held", hold_reason="over_limit")
    await engine.dispose()
    runs = {
        ("list", "--status", "held"): 0,
        ("release", "999"): 3,
        ("reject", str(held)): 2,  # --reason is required
        ("list", "--status", "nonsense"): 2,
        ("release", str(held), "--actor", "ci"): 0,
        ("release", str(held)): 1,
    }
    logged: list[dict[str, Any]] = []
    for argv, expected in runs.items():
        done = await anyio.to_thread.run_sync(lambda argv=argv: _run_cli(env, *argv, cwd=tmp_path))  # type: ignore[misc]
        assert done.returncode == expected, (argv, done.stdout, done.stderr)
        logged += [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    # The moves' log lines (JSON on stderr) name who asked, not the address or the amount.
    moves = [(e["level"], e["message"]) for e in logged if e["logger"] == payout_admin.__name__]
    assert moves == [
        ("info", f"payout {held}: held -> pending (released by ci)"),
        ("info", f"payout {held}: release refused: it is pending, not held (asked by night-shift)"),
    ]
    _assert_no_money_details([json.dumps(e) for e in logged])
    done = await anyio.to_thread.run_sync(lambda: _run_cli(env, "show", str(held), cwd=tmp_path))
    assert done.returncode == 0
    assert ADDRESS in done.stdout


# ---- the record of who did what -------------------------------------------------------------------------------


async def test_every_move_is_recorded_with_who_when_and_why_refusals_are_not(db: Db) -> None:
    payout_id = await add(db.engine, 13, "pending")
    assert (await cli(db, "hold", str(payout_id), "--reason", "key\treview", "--actor", "alice"))[0] == 0
    assert (await cli(db, "release", str(payout_id), "--actor", "bob"))[0] == 0
    assert (await cli(db, "release", str(payout_id), "--actor", "carol"))[0] == 1  # refused: not recorded
    code, out, _ = await cli(db, "show", str(payout_id), "--json")
    assert code == 0
    actions = json.loads(out)["operator_actions"]
    assert [(a["action"], a["old_status"], a["new_status"], a["actor"], a["reason"]) for a in actions] == [
        ("hold", "pending", "held", "alice", "key review"),
        ("release", "held", "pending", "bob", None),
    ]
    assert all(a["created_at"].endswith("Z") for a in actions)
    code, out, _ = await cli(db, "show", str(payout_id))
    lines = out.splitlines()
    at = lines.index("operator actions (2):")
    assert lines[at + 1].endswith("hold pending -> held by alice: key review")
    assert lines[at + 2].endswith("release held -> pending by bob")


async def test_the_record_is_written_with_the_move_or_not_at_all(db: Db) -> None:
    """Concurrent moves: exactly one record, the winner's."""
    payout_id = await add(db.engine, 14, "held", hold_reason="over_limit")

    async def attempt(n: int) -> None:
        with contextlib.suppress(MoveRefused):
            await payout_admin.reject(db.engine, payout_id, f"op{n}", "race")

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(attempt, n)
    detail = await payout_admin.get_payout(db.engine, payout_id)
    assert [a["action"] for a in detail.actions] == ["reject"]


async def test_in_sandbox_mode_it_reads_the_database_serve_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icy_backend.sandbox import SANDBOX_DB_FILE

    monkeypatch.chdir(tmp_path)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / SANDBOX_DB_FILE}")
    await upgrade(engine)
    held = await add(engine, 15, "held", hold_reason="over_limit")
    await engine.dispose()
    settings = Settings(_env_file=None, APP_ENV="local")
    assert settings.sandbox_enabled
    out, err = io.StringIO(), io.StringIO()
    code = await payouts_cli.run(settings, build_parser().parse_args(["payouts", "list"]), out, err)
    assert code == 0, err.getvalue()
    assert [line.split()[0] for line in out.getvalue().splitlines()[1:-1]] == [str(held)]
    assert "sandbox mode" in err.getvalue()
    assert not (tmp_path / "icy_backend.sqlite3").exists()
