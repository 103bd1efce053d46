"""``icy-backend`` command line: serve, migrate, simulate, check, payouts."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio

from icy_backend.settings import Settings, SettingsError, load_settings

log = logging.getLogger("icy_backend.cli")


EXIT_CONFIG = 2
"""Exit code of every command when the configuration is invalid (same as a usage error)."""


def _config_error(lines: Sequence[str]) -> SystemExit:
    print("icy-backend: invalid configuration:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    return SystemExit(EXIT_CONFIG)


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise _config_error(exc.lines) from None


def _check_wallet_or_exit(settings: Settings) -> None:
    """The payout key must be usable and match the treasury address; say so in one line before serving."""
    from icy_backend.domain.wallet import WalletConfigError, check_wallet_matches_treasury

    try:
        check_wallet_matches_treasury(settings)
    except WalletConfigError as exc:
        raise _config_error([str(exc)]) from None


def _configure_logging(settings: Settings) -> None:
    from icy_backend.logs import configure_logging

    configure_logging(settings.LOG_LEVEL, settings.log_format, settings.secret_values())


def hypercorn_config(settings: Settings, path: Path) -> object:
    """Load ``hypercorn.toml`` and apply ``HOST``/``PORT``."""
    from hypercorn.config import Config

    if path.is_file():
        config = Config.from_toml(path)
    else:
        log.warning("hypercorn config %s not found; using hypercorn defaults", path.name)
        config = Config()
    host = f"[{settings.HOST}]" if ":" in settings.HOST else settings.HOST
    config.bind = [f"{host}:{settings.PORT}"]
    return config


async def _serve(settings: Settings, config_path: Path) -> None:
    from hypercorn.asyncio import serve

    from icy_backend.app import create_app

    app = create_app(settings)
    config = hypercorn_config(settings, config_path)
    lifecycle = app.state.lifecycle

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s: draining", signal.Signals(signum).name)
                break
        # /readyz answers 503 from this moment; hypercorn then stops accepting and drains in-flight requests.
        lifecycle.begin_drain()
        if settings.SHUTDOWN_DRAIN_DELAY_SECONDS > 0:
            await anyio.sleep(settings.SHUTDOWN_DRAIN_DELAY_SECONDS)

    with warnings.catch_warnings():
        # `workers = 0` in hypercorn.toml documents the single-process model; serve() is that model.
        warnings.filterwarnings("ignore", message="The config `workers` has no affect")
        await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]

    from icy_backend.lifecycle import reap_leftover_tasks

    if await reap_leftover_tasks():
        # A task that ignores cancellation would hold asyncio.run's exit forever (and the pod until SIGKILL).
        # Everything of ours has stopped by now: the lifespan completed. Flush the logs and leave.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _migrate(settings: Settings) -> None:
    from icy_backend.db.engine import make_engine
    from icy_backend.db.migrate import upgrade

    engine = make_engine(settings)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def build_parser() -> argparse.ArgumentParser:
    """Every command and option of ``icy-backend``."""
    from icy_backend import payouts_cli

    parser = argparse.ArgumentParser(prog="icy-backend", description="ICY <-> BTC swap backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the HTTP service under hypercorn")
    serve_p.add_argument("--config", default="hypercorn.toml", help="hypercorn TOML file (default: %(default)s)")
    sub.add_parser("migrate", help="apply database migrations")
    sim_p = sub.add_parser("simulate", help="serve the chain simulators (Esplora, EVM, prices, Mochi Pay)")
    sim_p.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    sim_p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    sim_p.add_argument("--env-file", default=None, help="write the KEY=value settings a service needs here")
    sim_p.add_argument(
        "--block-time", type=float, default=5.0, help="seconds between blocks (default: 5; 0: never mine)"
    )
    sim_p.add_argument(
        "--btc-block-time",
        type=float,
        default=None,
        help="seconds between Bitcoin blocks (default: --block-time; 0: only POST /esplora/_sim/mine mines)",
    )
    sim_p.add_argument(
        "--replicas", type=int, choices=(1, 2), default=1, help="2: also serve /evm2, a replica that can lag"
    )
    check_p = sub.add_parser(
        "check",
        help="run every health check once (or ask a running server's /readyz with --url); "
        "exit 0 healthy or degraded, 1 unhealthy",
    )
    check_p.add_argument(
        "--url",
        default=None,
        help="base URL of a running server, e.g. http://127.0.0.1:8080: ask its /readyz instead (container "
        "HEALTHCHECK); exit 1 on anything but a 200",
    )
    check_p.add_argument(
        "--timeout", type=float, default=3.0, help="with --url: seconds for the whole request (default: %(default)s)"
    )
    payouts_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from icy_backend import payouts_cli

    parser = build_parser()
    args = parser.parse_args(argv)

    if args.command == "check" and args.url:
        # A container HEALTHCHECK: ask the running server; needs no settings, database or upstream.
        from checks.cli import ask_readyz

        return anyio.run(ask_readyz, args.url, args.timeout)

    if args.command == "simulate":
        from icy_backend.sim.serve import run_simulate

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        run = partial(run_simulate, replicas=args.replicas, btc_block_time=args.btc_block_time)
        anyio.run(run, args.port, args.env_file, args.block_time, args.host)
        return 0

    settings = _settings_or_exit()
    _configure_logging(settings)
    if args.command == "check":
        from checks.cli import run_checks_once

        if settings.sandbox_enabled:
            print(
                "icy-backend check: sandbox mode (no chain endpoints configured): the upstreams only exist inside a "
                "running `serve`, so they are reported not_configured here.",
                file=sys.stderr,
            )

        return anyio.run(run_checks_once, settings)
    if args.command == "payouts":
        return anyio.run(payouts_cli.run, settings, args)
    if args.command == "serve":
        _check_wallet_or_exit(settings)
        anyio.run(_serve, settings, Path(args.config))
        return 0
    if args.command == "migrate":
        anyio.run(_migrate, settings)
        print("migrations applied")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
