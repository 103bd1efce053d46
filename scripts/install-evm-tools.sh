#!/usr/bin/env bash
# Install the pinned EVM test tools — npm `solc` (the Solidity compiler as solcjs) and
# `@foundry-rs/anvil-linux-amd64` (anvil, a local EVM node) — into .tools/evm (gitignored).
# Versions and integrity hashes: tools/evm/package.json + package-lock.json.
# Idempotent and offline once installed: nothing is fetched while the installed lock file matches.
# Without node/npm (or on a failed install) it warns and exits 0 so a developer machine can still run the rest
# of the suite (the anvil tests skip); under CI=true/1/yes/on it exits 1 instead: CI must never skip them.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/evm
ci=$(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]')

give_up() {
  echo "install-evm-tools: $1" >&2
  case "$ci" in
    true | 1 | yes | on) exit 1 ;;
    *) echo "install-evm-tools: the real-EVM tests (tests/evm_real) will skip" >&2; exit 0 ;;
  esac
}

ready() {
  [ -x "$dest/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" ] &&
    [ -f "$dest/node_modules/solc/soljson.js" ] &&
    cmp -s tools/evm/package-lock.json "$dest/package-lock.json" &&
    cmp -s tools/evm/package-lock.json "$dest/.installed"
}

ready && exit 0
command -v node >/dev/null 2>&1 || give_up "node is not installed (needs Node.js >= 20)"
command -v npm >/dev/null 2>&1 || give_up "npm is not installed"
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || give_up "anvil's npm package is for linux x86_64 only"

echo "install-evm-tools: installing solc and anvil into $dest (pinned in tools/evm)" >&2
mkdir -p "$dest"
rm -f "$dest/.installed"
cp tools/evm/package.json tools/evm/package-lock.json "$dest/"
# --ignore-scripts: neither package needs an install script; nothing else may be downloaded.
if ! (cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2); then
  give_up "npm ci failed"
fi
ready_bins() {
  "$dest/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" --version >/dev/null &&
    node -e "require('./$dest/node_modules/solc').version()" >/dev/null
}
ready_bins || give_up "the installed tools do not run"
cp tools/evm/package-lock.json "$dest/.installed"
echo "install-evm-tools: done" >&2
