"""RESULTS.md is generated from the result files: each section says its command, commit, date and machine."""

from __future__ import annotations

from experiments.results_md import provenance, tables

STAMP = {"date": "2026-12-06 12:00 UTC", "commit": "abc1234", "command": "python -m experiments.benchmarks.bench_x",
         "cpu": {"model": "Some CPU", "cores": 2, "flags": "fpu avx2 avx512f sse4_2 vmx"}}


def test_a_stamped_file_gives_its_command_commit_date_and_vector_flags():
    facts = provenance({"recorded": STAMP, "rows": []}, default_command="not this one")
    assert facts["command"] == "python -m experiments.benchmarks.bench_x" and facts["commit"] == "abc1234"
    assert facts["machine"] == "Some CPU, 2 cores; vector flags: avx2 avx512f sse4_2"


def test_an_unstamped_file_says_what_it_did_not_record():
    facts = provenance({"rows": []}, default_command="python -m experiments.benchmarks.bench_y")
    assert facts["command"] == "python -m experiments.benchmarks.bench_y"
    assert facts["commit"] == "not recorded" and facts["date"] == "not recorded"
    assert facts["machine"].startswith("not recorded")


def test_the_first_tables_of_a_report_come_with_their_headings():
    report = "# Report\n\nintro\n\n## Tier alone\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\ntext\n\n| c |\n|---|\n| 3 |\n"
    first, second = tables(report, 2)
    assert first == "Tier alone\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    assert second == "| c |\n|---|\n| 3 |"
    assert tables(report, 1) == [first]
