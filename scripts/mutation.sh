#!/usr/bin/env bash
# Mutation testing of the money modules (payouts, swap requests, fees, signature, swap validation, indexers) with
# their own tests (tests/icy_backend/money, tests/icy_backend/domain), SPEC §12. Prints the score per module and
# the surviving mutants, and records the run in bench/results/mutation.json. Reported, not gated in CI.
#
#   scripts/mutation.sh                                  # every money module (long: tens of minutes on 2 cores)
#   scripts/mutation.sh "icy_backend.domain.fees*"       # only the mutants whose names match
#
# mutmut works in ./mutants (a copy of the tree, git-ignored); `mutmut show NAME` prints one mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure-services.sh
rm -rf mutants
.venv/bin/mutmut run "$@" >/dev/null 2>&1 || true
.venv/bin/python -m scripts.mutation_score "$@"
