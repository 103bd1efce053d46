#!/usr/bin/env bash
# Create .venv and install icy-backend with its test and dev extras from requirements.lock (exact versions, hashes
# checked). Idempotent: re-installs only when pyproject.toml or the lock changed since the last install. A failed
# install stops here with the installer's own message (never a silent skip later).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi
"$PY" scripts/check_lock.py
stamp=.venv/.icy-backend-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing the locked dependencies (first run takes a minute or two)" >&2
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  install() {
    if ! "$@" >"$log" 2>&1; then
      grep -v "^WARNING: Location" "$log" >&2 || true
      echo "bootstrap: FAILED: $*" >&2
      exit 1
    fi
  }
  install .venv/bin/python -m pip install --quiet --upgrade pip
  install .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
  install .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  install .venv/bin/python -m pip check
  .venv/bin/python -c "import icy_backend, starlette, hypercorn, pytest"
  echo "$want" > "$stamp"
fi
