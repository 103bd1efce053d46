"""Honest numbers (SPEC §12): the README's measured figures are exactly the recorded runs in bench/results/."""

from __future__ import annotations

import json
import re

from bench.report import README, RESULTS, readme_section, table


def test_readme_table_is_generated_from_the_recorded_runs() -> None:
    section = readme_section(README.read_text(encoding="utf-8"))
    assert section is not None, "README.md lost its generated benchmark table"
    assert section == table(), "README.md's figures differ from bench/results/: run `python -m bench.report --write`"


def test_every_recorded_run_says_how_where_and_when() -> None:
    runs = sorted(RESULTS.glob("*.json"))
    assert runs, "no recorded benchmark run"
    for path in runs:
        run = json.loads(path.read_text(encoding="utf-8"))
        # A command of the repo: a bench module, or a script of scripts/ (mutation.sh wraps mutmut).
        assert run["command"].startswith((".venv/bin/python", "scripts/")), path
        assert re.match(r"\d{4}-\d\d-\d\dT", run["date"]), path
        assert run["machine"].get("cpus") and run["machine"].get("commit"), path
        assert run["results"], path


def test_the_readme_quotes_no_figure_outside_the_generated_table() -> None:
    text = README.read_text(encoding="utf-8")
    section = readme_section(text) or ""
    measured = text.split("## Measured", 1)[1].split("\n## ", 1)[0] if "## Measured" in text else ""
    outside = measured.replace(section, "")
    # Prose may explain the figures, but numbers with units belong in the generated table only.
    quoted = re.findall(r"\b\d[\d.,]*\s?(?:ms|µs|req/s|payouts/min|rows/s|%)", outside)
    assert not quoted, f"figures typed by hand in README's Measured section: {quoted}"
