#!/usr/bin/env bash
# Run the service. With no chain endpoints configured (and APP_ENV unset or local) it starts in sandbox mode:
# simulators in-process, demo data, SQLite in ./icy_backend.sqlite3. Listens on PORT (default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/icy-backend serve "$@"
