#!/usr/bin/env bash
# The sandbox against a real EVM: anvil with the project's Solidity contracts replaces the in-process EVM
# simulator; Esplora, prices and Mochi Pay stay simulated. Service on 127.0.0.1:8080, anvil on :8545.
# Options: --port N --anvil-port N --block-time S. Then, in another shell:
#   .venv/bin/python -m icy_backend.sim.anvil_sandbox swap --icy 100 --btc-address <testnet address>
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-evm-tools.sh
exec .venv/bin/python -m icy_backend.sim.anvil_sandbox run "$@"
