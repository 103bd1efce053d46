"""Write one benchmark run as JSON under ``bench/results/`` (SPEC §12 "Honest numbers").

Every figure the README quotes names the file written here: the command that produced it, when, on what machine,
and the numbers of that one run (never the best of several).

    from bench.record import record
    path = record("payouts", {"payouts_per_minute": 812.4, ...}, notes="100 pending rows, PostgreSQL")
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    """Output of a git command in this repo ("" when git is unavailable)."""
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent
        )
    except OSError:
        return ""
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: CPUs, memory, Python, platform, the commit measured."""
    facts: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            facts["mem_total_kib"] = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    commit = _git("rev-parse", "--short", "HEAD")
    if commit:
        facts["commit"] = commit + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    return facts


def _command(args: list[str]) -> str:
    """The command line as a newcomer would type it in the repo: ``.venv/bin/python -m bench.x --flag``."""
    root = RESULTS.parent.parent
    words = list(args)
    if words:
        script = Path(words[0]).resolve()
        if script.suffix == ".py" and script.is_relative_to(root):
            rel = script.relative_to(root)
            words[0] = "-m " + ".".join(rel.with_suffix("").parts) if rel.parts[0] == "bench" else str(rel)
    return " ".join([".venv/bin/python", *(w if w.startswith("-m ") else shlex.quote(w) for w in words)])


def record(
    name: str, results: dict[str, Any], *, notes: str = "", headline: str = "", argv: list[str] | None = None
) -> Path:
    """Write ``bench/results/<name>.json`` (the latest run of that benchmark; git keeps the history).

    ``headline`` is the one-line summary the README quotes (built by the benchmark from the numbers it measured,
    never typed by hand); ``python -m bench.report`` renders the README's table from these files.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    args = sys.argv if argv is None else argv
    payload = {
        "benchmark": name,
        "command": _command(args) if argv is None else " ".join(args),
        "headline": headline,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "notes": notes,
        "results": results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"recorded {path.relative_to(RESULTS.parent.parent)}")
    return path
