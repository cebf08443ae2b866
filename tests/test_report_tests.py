"""The README's test counts come from a command: it runs pytest and tabulates the JUnit report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.benchmarks import report_tests


def test_a_suite_run_counts_what_pytest_ran_and_writes_its_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_tests, "RESULTS", tmp_path)
    row = report_tests.run_suite("unit", ["tests/test_curves.py", "-k", "short_curve or long_curve"])
    assert (row["exit_code"], row["collected"], row["passed"], row["failed"]) == (0, 2, 2, 0)
    report_tests.write(row)
    assert json.loads((tmp_path / "tests.json").read_text())["suites"]["unit"]["collected"] == 2
    table = (tmp_path / "tests.md").read_text()
    assert "| unit | `pytest tests/test_curves.py -k short_curve or long_curve` | 2 | 2 | 0 | 0 | 0 |" in table


def test_a_suite_that_collects_nothing_reports_pytests_exit_code_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_tests, "RESULTS", tmp_path)
    row = report_tests.run_suite("integration", ["tests/test_curves.py"])
    assert row["exit_code"] == 5 and row["collected"] == 0  # no integration test there: pytest says so
