"""``icy-backend payouts list | show | release | reject | hold``: the operator's view of payouts (SPEC §3).

Runs against the configured ``DATABASE_URL`` (no server needed). Addresses and amounts are printed here, to the
operator, and nowhere else: the INFO log line of a move names the payout id, the move and who asked.

Exit codes (for scripts):

* 0 — done (listed, shown, or the move took effect);
* 1 — refused: the payout is not in the state the move needs (e.g. ``release`` of a payout that is not ``held``);
* 2 — usage error or invalid configuration;
* 3 — no payout with that id;
* 4 — the database could not be reached or failed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from typing import Any, TextIO

from sqlalchemy.exc import SQLAlchemyError

from icy_backend.db.tables import PAYOUT_STATUSES
from icy_backend.domain import payout_admin
from icy_backend.domain.payout_admin import MoveRefused, PayoutNotFound, as_json, as_text
from icy_backend.settings import Settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_DATABASE = 4

LIST_COLUMNS = (
    ("ID", "id"),
    ("STATUS", "status"),
    ("HOLD", "hold_reason"),
    ("FAILURE", "failure_reason"),
    ("TOTAL_SATS", "total"),
    ("ADDRESS", "btc_address"),
    ("SWAP_EVENT", "swap_event"),
    ("ATTEMPTS", "attempts"),
    ("CREATED_AT", "created_at"),
)
SHOW_FIELDS = (
    "id",
    "status",
    "hold_reason",
    "failure_reason",
    "btc_address",
    "subtotal",
    "service_fee",
    "network_fee",
    "total",
    "swap_transaction_hash",
    "swap_event_index",
    "btc_transaction_hash",
    "confirmations",
    "reorged",
    "attempts",
    "created_at",
    "updated_at",
    "broadcast_at",
    "released_at",
    "processed_at",
)
CANDIDATE_FIELDS = ("txid", "status", "fee", "fee_rate", "broadcast_height", "created_at")
ACTION_FIELDS = ("created_at", "action", "old_status", "new_status", "actor", "reason")


def _actor_default() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a container UID without passwd entry)
        return "unknown"


def add_parser(sub: Any) -> None:
    """Register ``payouts`` and its subcommands on the top-level subparsers."""
    payouts = sub.add_parser(
        "payouts",
        help="list, show, release, reject or hold payouts (exit 0 done, 1 refused, 2 usage, 3 not found, 4 database)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = payouts.add_subparsers(dest="payouts_command", required=True)
    list_p = actions.add_parser("list", help="payouts, newest first")
    list_p.add_argument("--status", choices=PAYOUT_STATUSES, help="only payouts in this status")
    list_p.add_argument("--limit", type=int, default=100, help="at most this many (default: %(default)s)")
    list_p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    show_p = actions.add_parser("show", help="one payout and its transaction candidates")
    show_p.add_argument("id", type=int)
    show_p.add_argument("--json", action="store_true", help="JSON instead of text")
    for name, text in (
        ("release", "held -> pending: pay it on the next run (within the daily limit)"),
        ("reject", "held -> failed (rejected): never pay it"),
        ("hold", "pending -> held (operator): do not build it until released"),
    ):
        move = actions.add_parser(name, help=text)
        move.add_argument("id", type=int)
        move.add_argument(
            "--reason",
            required=name != "release",
            help="why (logged and recorded; keep addresses and amounts out of it)",
        )
        move.add_argument("--actor", default=None, help="who asks (logged; default: the OS user)")


async def run(
    settings: Settings, args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``payouts`` subcommand against the configured database; returns the exit code."""
    from icy_backend.db.engine import make_engine

    out = out or sys.stdout
    err = err or sys.stderr
    if getattr(args, "limit", 1) < 1:
        err.write("icy-backend payouts: --limit must be at least 1\n")
        return EXIT_USAGE
    engine = make_engine(settings, _database_url(settings, err))
    try:
        return await _run(engine, args, out)
    except PayoutNotFound as exc:
        err.write(f"icy-backend payouts: {exc}\n")
        return EXIT_NOT_FOUND
    except MoveRefused as exc:
        err.write(f"icy-backend payouts: {exc}\n")
        return EXIT_REFUSED
    except (SQLAlchemyError, OSError) as exc:
        # The class only: a driver message may carry the database URL.
        log.warning("payouts %s: database error (%s)", args.payouts_command, type(exc).__name__)
        err.write(f"icy-backend payouts: database error ({type(exc).__name__}); is DATABASE_URL right and migrated?\n")
        return EXIT_DATABASE
    finally:
        await engine.dispose()


def _database_url(settings: Settings, err: TextIO) -> str:
    """The database ``serve`` uses with these settings: in sandbox mode without a configured database, the sandbox's
    own file (``serve`` empties it at each start)."""
    if settings.sandbox_enabled and not ({"DATABASE_URL", "DB_HOST"} & settings.model_fields_set):
        from icy_backend.sandbox import SANDBOX_DB_FILE

        err.write(f"icy-backend payouts: sandbox mode: using the sandbox database ./{SANDBOX_DB_FILE}\n")
        return f"sqlite+aiosqlite:///./{SANDBOX_DB_FILE}"
    return settings.database_url


async def _run(engine: Any, args: argparse.Namespace, out: TextIO) -> int:
    command = args.payouts_command
    if command == "list":
        rows = await payout_admin.list_payouts(engine, args.status, args.limit)
        if args.json:
            out.write(json.dumps([_listed(as_json(r)) for r in rows], indent=2) + "\n")
        else:
            out.write(format_table(rows))
        return EXIT_OK
    if command == "show":
        detail = await payout_admin.get_payout(engine, args.id)
        if args.json:
            shown = {k: v for k, v in as_json(detail.payout).items() if k != "raw_tx"}
            shown["candidates"] = [
                {k: v for k, v in as_json(c).items() if k in CANDIDATE_FIELDS} for c in detail.candidates
            ]
            shown["operator_actions"] = [
                {k: v for k, v in as_json(a).items() if k in ACTION_FIELDS} for a in detail.actions
            ]
            out.write(json.dumps(shown, indent=2) + "\n")
        else:
            out.write(format_show(detail))
        return EXIT_OK
    actor = args.actor or _actor_default()
    if command == "release":
        move = await payout_admin.release(engine, args.id, actor, args.reason)
    elif command == "reject":
        move = await payout_admin.reject(engine, args.id, actor, args.reason)
    else:
        move = await payout_admin.hold(engine, args.id, actor, args.reason)
    out.write(f"payout {move.payout_id}: {move.old} -> {move.new}\n")
    return EXIT_OK


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "raw_tx"}


def format_table(rows: list[dict[str, Any]]) -> str:
    table = [tuple(title for title, _ in LIST_COLUMNS)]
    for row in rows:
        cells = {**row, "swap_event": f"{row['swap_transaction_hash']}:{row['swap_event_index']}"}
        table.append(tuple(as_text(cells[key]) for _, key in LIST_COLUMNS))
    widths = [max(len(r[i]) for r in table) for i in range(len(LIST_COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in table]
    lines.append(f"{len(rows)} payout(s)")
    return "\n".join(lines) + "\n"


def format_show(detail: payout_admin.PayoutDetail) -> str:
    width = max(len(f) for f in SHOW_FIELDS)
    lines = [f"{name.ljust(width)}  {as_text(detail.payout[name])}" for name in SHOW_FIELDS]
    lines.append(f"candidates ({len(detail.candidates)}):")
    for c in detail.candidates:
        lines.append("  " + "  ".join(f"{f}={as_text(c[f])}" for f in CANDIDATE_FIELDS))
    lines.append(f"operator actions ({len(detail.actions)}):")
    for a in detail.actions:
        why = f": {a['reason']}" if a["reason"] else ""
        lines.append(
            f"  {as_text(a['created_at'])}  {a['action']} {a['old_status']} -> {a['new_status']} by {a['actor']}{why}"
        )
    return "\n".join(lines) + "\n"
