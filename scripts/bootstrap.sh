#!/usr/bin/env bash
# Create .venv and install icy-backend with its test and dev extras. Idempotent: re-installs only when
# pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.icy-backend-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing dependencies (first run takes a minute or two)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -m pip install --quiet -e ".[test,dev]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c "import icy_backend, starlette, hypercorn, pytest" # fail loudly if the install failed
  echo "$want" > "$stamp"
fi
