"""Test counts and timings for the README, measured rather than typed: run a pytest suite, tabulate it.

Runs ``pytest`` (the ``unit`` suite: the default run, which excludes integration tests) or
``pytest -m integration`` (the ``integration`` suite) with a JUnit XML report, then replaces that
suite's row in ``experiments/benchmarks/results/tests.{json,md}``: tests collected, passed,
failed, errors, skipped, wall time (the whole command, collection and fixtures included) and the
slowest tests. Exits with pytest's exit code.

    python -m experiments.benchmarks.report_tests unit
    python -m experiments.benchmarks.report_tests integration     # starts Ray Serve and vLLM
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.benchmarks.results_io import commit, write_results

RESULTS = Path(__file__).resolve().parent / "results"
SUITES = {"unit": [], "integration": ["-m", "integration"]}
SLOWEST = 5


def run_suite(suite: str, extra: list[str]) -> dict[str, Any]:
    """Run one suite and summarise its JUnit report."""
    tested = commit()  # what is tested, before anything can change under the run
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES[suite],
                   f"--junitxml={report}", *extra]
        started = time.perf_counter()
        exit_code = subprocess.run(command, check=False).returncode
        wall_s = time.perf_counter() - started
        cases = list(ET.parse(report).getroot().iter("testcase")) if report.is_file() else []
    outcome = [_outcome(case) for case in cases]
    slowest = sorted(cases, key=lambda case: -float(case.get("time", 0.0)))[:SLOWEST]
    return {
        "suite": suite, "command": "pytest" + "".join(f" {arg}" for arg in (*SUITES[suite], *extra)),
        "exit_code": exit_code, "collected": len(cases),
        **{name: outcome.count(name) for name in ("passed", "failed", "error", "skipped")},
        "wall_s": round(wall_s, 1),
        "slowest": [{"test": f"{case.get('classname')}::{case.get('name')}", "s": round(float(case.get("time", 0.0)), 1)}
                    for case in slowest],
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "commit": tested,
    }


def write(row: dict[str, Any]) -> dict[str, Any]:
    """Replace ``row``'s suite in ``tests.json`` and rewrite ``tests.md`` from it."""
    path = RESULTS / "tests.json"
    rows = json.loads(path.read_text())["suites"] if path.is_file() else {}
    rows[row["suite"]] = row
    out = {"benchmark": "tests", "suites": rows}
    write_results(RESULTS, "tests", out, markdown, indent=1)
    return out


def markdown(out: dict[str, Any]) -> str:
    """One row per suite, then each suite's slowest tests."""
    rows = out["suites"]
    lines = ["# Test suites (`experiments/benchmarks/report_tests.py`)", "",
             "Written by `python -m experiments.benchmarks.report_tests unit|integration`; wall time is the "
             "whole pytest command (collection and fixtures included).", "",
             "| suite | command | collected | passed | failed | errors | skipped | wall time | when | commit | CPUs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for suite in SUITES:
        if suite in rows:
            r = rows[suite]
            lines.append(f"| {suite} | `{r['command']}` | {r['collected']} | {r['passed']} | {r['failed']} | {r['error']} | "
                         f"{r['skipped']} | {r['wall_s'] / 60:.1f} min | {r['when'][:10]} | {r['commit']} | "
                         f"{r['machine']['cpus']} |")
    for suite in SUITES:
        if suite in rows:
            lines += ["", f"Slowest {suite} tests:", ""]
            lines += [f"- {test['s']:.1f} s `{test['test']}`" for test in rows[suite]["slowest"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SUITES:
        print(f"usage: python -m experiments.benchmarks.report_tests {'|'.join(SUITES)} [pytest args]", file=sys.stderr)
        return 2
    row = run_suite(argv[0], argv[1:])
    write(row)
    print(json.dumps(row, indent=1))
    return int(row["exit_code"])


def _outcome(case: ET.Element) -> str:
    for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        if case.find(tag) is not None:
            return name
    return "passed"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
