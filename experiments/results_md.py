"""Write ``experiments/RESULTS.md`` from the result files: every figure with the command that makes it,
the commit, the date and the machine (CPU model and vector flags) that produced it.

Sources: each experiment's ``experiments/results/NAME/{results.json,report.md}`` and each benchmark's
``experiments/benchmarks/results/NAME.{json,md}``. A file written by this version carries a ``recorded``
stamp (:func:`experiments.benchmarks.results_io.recorded`); an older file says what it recorded of its
machine, or that it recorded none. Nothing here measures anything: re-run a section's command, then this.

    python -m experiments.results_md            # rewrite experiments/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from experiments.benchmarks.results_io import VECTOR_FLAGS

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments" / "results"
BENCHMARKS = ROOT / "experiments" / "benchmarks" / "results"
OUT = ROOT / "experiments" / "RESULTS.md"

BENCHMARK_COMMANDS = {
    "decision_cost": "python -m experiments.benchmarks.bench_decision_cost",
    "detectors": "python -m experiments.benchmarks.bench_detectors",
    "experts": "python -m experiments.benchmarks.bench_experts",
    "fault": "python -m experiments.benchmarks.fault_test",
    "injection": "python -m experiments.injection --kind vllm --mails 40",
    "injection-control": "python -m experiments.injection --control --mails 40",
    "policies": "python -m experiments.benchmarks.bench_policies",
    "policy_comparison": "python -m experiments.benchmarks.bench_policy_comparison",
    "prompts": "python -m experiments.benchmarks.bench_prompts",
    "serve": "python -m experiments.benchmarks.bench_serve",
    "serve_llm": "python -m experiments.benchmarks.bench_serve_llm",
    "sweep": "python -m experiments.benchmarks.bench_sweep",
    "tests": "python -m experiments.benchmarks.report_tests unit",
}
"""how each benchmark's files are made, for files written before the stamp recorded the command"""


def provenance(numbers: dict[str, Any], default_command: str) -> dict[str, str]:
    """Command, commit, date and machine of one result file (what it recorded; 'not recorded' otherwise)."""
    stamp = numbers.get("recorded")
    if stamp:
        vector = [flag for flag in stamp["cpu"]["flags"].split() if flag.startswith(VECTOR_FLAGS)]
        return {"command": stamp.get("command") or default_command, "commit": stamp["commit"], "date": stamp["date"],
                "machine": f"{stamp['cpu']['model']}, {stamp['cpu']['cores']} cores; vector flags: "
                           f"{' '.join(vector) or 'none listed'}"}
    machine = numbers.get("machine")
    if isinstance(machine, dict):
        machine = ", ".join(f"{k}: {v}" for k, v in machine.items() if isinstance(v, (str, int, float)))
    date = numbers.get("date") or numbers.get("when")
    return {"command": default_command, "commit": "not recorded", "date": str(date) if date else "not recorded",
            "machine": str(machine) if machine else "not recorded (written before results carried their machine)"}


def tables(markdown: str, count: int) -> list[str]:
    """The first ``count`` markdown tables of a report, each with the heading line above it, if any."""
    found, lines = [], markdown.splitlines()
    i = 0
    while i < len(lines) and len(found) < count:
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            heading = next((lines[j] for j in range(start - 1, max(start - 4, -1), -1) if lines[j].startswith("#")),
                           None)
            block = "\n".join(lines[start:i])
            found.append(f"{heading.lstrip('#').strip()}\n\n{block}" if heading else block)
        i += 1
    return found


def config_for(name: str) -> str:
    """The shipped experiment config whose ``name`` is ``name`` (its path), for the command line."""
    for path in sorted((ROOT / "experiments" / "configs").glob("*.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get("name") == name:
            return str(path.relative_to(ROOT))
    return f"<the config named {name}>"


def section(title: str, where: Path, numbers: dict[str, Any], report: str, default_command: str,
            n_tables: int) -> str:
    facts = provenance(numbers, default_command)
    body = "\n\n".join(tables(report, n_tables)) or "(no table in the report)"
    return (f"## {title}\n\n"
            f"- command: `{facts['command']}`\n- commit: {facts['commit']}\n- date: {facts['date']}\n"
            f"- machine: {facts['machine']}\n- files: [{where.name}]({where.relative_to(OUT.parent).as_posix()})\n\n"
            f"{body}\n")


def demo_section(path: Path) -> str:
    """``make demo``'s time per step and what its served traffic did, with the machine it ran on."""
    numbers = json.loads(path.read_text())
    facts = provenance(numbers, "make demo")
    steps = "\n".join(f"| {name} | {seconds:.0f} |" for name, seconds in numbers["timings_s"].items())
    hits = numbers.get("expert_scores_from_cache")
    cached = "not recorded" if hits is None else ", ".join(t for t, hit in hits.items() if hit) or "none (a first run)"
    traffic = numbers["traffic"]
    note = f" ({numbers['note']})" if numbers.get("note") else ""
    return (f"## Demo `make demo`{note}\n\n- command: `{facts['command']}`\n- commit: {facts['commit']}\n"
            f"- date: {facts['date']}\n- machine: {facts['machine']}\n"
            f"- files: [{path.name}]({path.relative_to(OUT.parent).as_posix()})\n"
            f"- expert scores read from the cache: {cached}\n\n"
            f"| step | seconds |\n|---|---:|\n{steps}\n| total | {numbers['total_s']:.0f} |\n\n"
            f"Traffic: {traffic['answered']} of {traffic['requests']} answered, {traffic['lost']} lost; realised "
            f"deferral rate {traffic['defer_rate']:.1%}; accuracy {traffic['accuracy']:.3f} against "
            f"{traffic['small_only_accuracy']:.3f} for the small tier alone on the same mails "
            f"({traffic['expert_fixed']} fixed, {traffic['expert_broke']} broken).\n")


def build() -> str:
    parts = ["# Results\n",
             "Generated by `python -m experiments.results_md` from the result files; do not edit by hand. "
             "Each section names the command that made its numbers, the commit, the date and the machine. "
             "Timings are comparable only within a section (same machine, same run).\n"]
    for folder in sorted(path for path in EXPERIMENTS.iterdir() if (path / "results.json").is_file()):
        numbers = json.loads((folder / "results.json").read_text())
        command = f"cascade experiment run {config_for(numbers.get('name', folder.name))}"
        parts.append(section(f"Experiment `{folder.name}`", folder / "report.md", numbers,
                             (folder / "report.md").read_text(), command, n_tables=4))
        for demo_file in sorted(folder.glob("demo*.json")):
            parts.append(demo_section(demo_file))
    for path in sorted(BENCHMARKS.glob("*.json")):
        report = path.with_suffix(".md")
        numbers = json.loads(path.read_text())
        parts.append(section(f"Benchmark `{path.stem}`", report, numbers,
                             report.read_text() if report.is_file() else "",
                             BENCHMARK_COMMANDS.get(path.stem, "not recorded"), n_tables=1))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    out = parser.parse_args().out
    out.write_text(build())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
