#!/usr/bin/env bash
# The whole test suite: lint, format check, type check, pytest (unit, PostgreSQL, simulators, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure-services.sh
scripts/install-evm-tools.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
