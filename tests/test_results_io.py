"""Every benchmark writes its numbers through one writer, which records where and when they were measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.benchmarks.results_io import write_results


def report_markdown(report: dict[str, Any]) -> str:
    return f"# Bench\n\n{report['rows'][0]['s']:.2f} s\n"


def test_numbers_and_report_carry_the_date_commit_and_cpu(tmp_path: Path) -> None:
    write_results(tmp_path, "bench", {"rows": [{"s": np.float64(1.5)}]}, report_markdown)
    numbers = json.loads((tmp_path / "bench.json").read_text())
    assert numbers["rows"] == [{"s": 1.5}]  # numpy values written as plain JSON numbers
    recorded = numbers["recorded"]
    assert recorded["date"].endswith("UTC") and recorded["commit"] and recorded["cpu"]["model"]
    assert recorded["cpu"]["cores"] >= 1 and isinstance(recorded["cpu"]["flags"], str)
    report = (tmp_path / "bench.md").read_text()
    assert report.startswith("# Bench\n\n1.50 s\n\nRecorded ")
    assert f"at commit {recorded['commit']} on {recorded['cpu']['model']}" in report and report.endswith(").\n")
