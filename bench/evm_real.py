"""How long the real-EVM tests take and how many of our signatures the Solidity contract judged.

    .venv/bin/python -m bench.evm_real          # runs tests/evm_real once (~30-60 s), PostgreSQL + anvil

Runs ``pytest -q -s tests/evm_real`` in a subprocess (tools installed by ``scripts/install-evm-tools.sh``), and
records the wall time of the whole run, pytest's own duration, the test counts, and the number of
``generate-signature`` signatures that the signature test sent to the contract on anvil (each one accepted, then
replayed and tampered: three transactions per signature) with that test's own duration. Writes
``bench/results/evm_real.json``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from bench.record import record

ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = re.compile(r"(\d+) signatures checked on anvil \(accepted, replayed, tampered\) in ([\d.]+) s")
SUMMARY = re.compile(r"(\d+) passed(?:, (\d+) skipped)?(?:, (\d+) failed)? in ([\d.]+)s")


def main() -> int:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "tests/evm_real"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    wall = time.monotonic() - started
    output = done.stdout + done.stderr
    signatures = SIGNATURES.search(output)
    summary = SUMMARY.search(output)
    if done.returncode != 0 or signatures is None or summary is None:
        print(output[-3000:], file=sys.stderr)
        print("bench.evm_real: the real-EVM tests did not pass; nothing recorded", file=sys.stderr)
        return 1
    count, sig_seconds = int(signatures.group(1)), float(signatures.group(2))
    passed, skipped = int(summary.group(1)), int(summary.group(2) or 0)
    pytest_seconds = float(summary.group(4))
    results = {
        "tests_passed": passed,
        "tests_skipped": skipped,
        "pytest_seconds": pytest_seconds,
        "wall_seconds": round(wall, 1),
        "route_signatures_checked": count,
        "signature_test_seconds": sig_seconds,
        "contract_transactions_in_signature_test": 3 * count,
    }
    headline = (
        f"tests/evm_real: {passed} tests on anvil in {pytest_seconds:.1f} s ({wall:.1f} s with start-up); "
        f"{count} generate-signature signatures accepted by the Solidity contract, each replay and tampered "
        f"amount reverted ({3 * count} transactions) in {sig_seconds:.1f} s"
    )
    path = record("evm_real", results, headline=headline, notes="solcjs compile + anvil start-up + deploy included")
    print(headline)
    print(f"recorded in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
