#!/usr/bin/env bash
# Refresh requirements.lock (every dependency, test and dev extras included, pinned with hashes) from
# pyproject.toml. Run it after changing dependencies in pyproject.toml, then commit both files; scripts/bootstrap.sh
# installs exactly what the lock says. `scripts/lock.sh --upgrade` also moves every pin to the newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
UV_VERSION=0.13.9
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  .venv/bin/python -m pip install --quiet "uv==$UV_VERSION"
fi
.venv/bin/uv pip compile pyproject.toml --extra test --extra dev --generate-hashes \
  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --no-header --quiet \
  ${1:+"$@"} -o requirements.lock
echo "lock: requirements.lock refreshed ($(grep -c '==' requirements.lock) pins); installing it" >&2
scripts/bootstrap.sh
