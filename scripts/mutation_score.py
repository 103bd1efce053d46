"""Score of the last `mutmut run`, per module, recorded in bench/results/mutation.json (see scripts/mutation.sh)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

from bench.record import record

ROOT = Path(__file__).resolve().parent.parent
KILLED = {"killed", "timeout"}  # a timeout is the test run noticing the mutant (an endless loop)
NOT_RUN = {"not checked", "skipped"}


def results() -> dict[str, str]:
    """Mutant name -> status, from `mutmut results --all true`."""
    out = subprocess.run(  # noqa: S603 - our own venv binary, fixed arguments
        [str(ROOT / ".venv/bin/mutmut"), "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status.strip()
    return found


def test_selection() -> list[str]:
    """The test paths mutmut ran (pyproject's ``[tool.mutmut] pytest_add_cli_args_test_selection``)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [str(p) for p in config["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]]


def module_of(mutant: str) -> str:
    """``icy_backend.domain.fees.x_service_fee__mutmut_3`` -> ``icy_backend.domain.fees``."""
    return mutant.split("__mutmut_")[0].rsplit(".", 1)[0]


def main() -> int:
    found = results()
    if not found:
        print("no mutants found: did `mutmut run` fail? run it by hand to see why", file=sys.stderr)
        return 1
    per_module: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, status in sorted(found.items()):
        module = module_of(name)
        per_module[module][status] += 1
        if status not in KILLED and status not in NOT_RUN:
            survivors[module].append(f"{name}: {status}")
    table: dict[str, dict[str, object]] = {}
    print(f"{'module':45} {'mutants':>8} {'killed':>7} {'score':>7}")
    for module, counts in sorted(per_module.items()):
        tested = sum(n for s, n in counts.items() if s not in NOT_RUN)
        killed = sum(n for s, n in counts.items() if s in KILLED)
        score = killed / tested if tested else 0.0
        table[module] = {"mutants": tested, "killed": killed, "score": round(score, 3), "statuses": dict(counts)}
        print(f"{module:45} {tested:8} {killed:7} {score:7.1%}")
    tested = sum(int(str(v["mutants"])) for v in table.values())
    killed = sum(int(str(v["killed"])) for v in table.values())
    print(f"{'total':45} {tested:8} {killed:7} {killed / tested if tested else 0:7.1%}")
    for module, names in sorted(survivors.items()):
        print(f"\nsurvivors in {module} (`.venv/bin/mutmut show NAME` for the diff):")
        for name in names:
            print("  " + name)
    scores = ", ".join(
        f"{module.rsplit('.', 1)[-1]} {float(str(row['score'])):.1%}"
        for module, row in sorted(table.items())
        if int(str(row["mutants"]))
    )
    record(
        "mutation",
        {"modules": table, "total": {"mutants": tested, "killed": killed}, "survivors": dict(survivors)},
        notes="mutmut 3.8.1 over the money modules with the tests in "
        + ", ".join(test_selection())
        + "; survivors judged equivalent are listed in bench/README.md",
        headline=f"mutation score {scores} (killed {killed} of {tested} mutants)",
        argv=["scripts/mutation.sh", *sys.argv[1:]],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
