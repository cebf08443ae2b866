"""Writes a benchmark's numbers as ``NAME.json`` and its report as ``NAME.md`` under one folder, each
recorded with the date, the commit and the CPU (model, flags, cores) that produced them."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cascade.artifact import json_default

VECTOR_FLAGS = ("sse4", "avx", "fma", "f16c", "amx", "asimd", "sve", "neon")
"""prefixes of the CPU flags that decide numeric speed, named in the markdown (the JSON keeps them all)"""


def write_results(out: Path, name: str, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                  indent: int = 2) -> None:
    """Save ``report`` to ``out/NAME.json`` and ``markdown(report)`` to ``out/NAME.md``, both with the
    :func:`recorded` stamp (key ``recorded``; a last line of the markdown)."""
    stamped = {**report, "recorded": recorded()}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(stamped, indent=indent, default=json_default) + "\n")
    (out / f"{name}.md").write_text(markdown(stamped).rstrip("\n") + "\n\n" + recorded_line(stamped["recorded"]) + "\n")


def recorded() -> dict[str, Any]:
    """When, at which commit and on which CPU this is being written (the run that measured it)."""
    model, flags = cpu()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(), "command": command(),
            "cpu": {"model": model, "cores": cores, "flags": " ".join(flags)}}


def command() -> str:
    """The command line that is running, as a user would type it from the repository root
    (``python -m experiments.benchmarks.bench_x --flag``, ``cascade experiment run CONFIG``)."""
    program, args = Path(sys.argv[0]), sys.argv[1:]
    root = Path(__file__).resolve().parents[2]
    if program.suffix == ".py" and program.resolve().is_relative_to(root):
        dotted = ".".join(program.resolve().relative_to(root).with_suffix("").parts)
        head = f"python -m {dotted.removesuffix('.__main__')}"
    else:
        head = "cascade" if program.name in ("cascade", "__main__.py") else program.name
    return " ".join([head, *args])


def recorded_line(stamp: dict[str, Any]) -> str:
    """The stamp as the markdown's last line."""
    vector = [flag for flag in stamp["cpu"]["flags"].split() if flag.startswith(VECTOR_FLAGS)]
    return (f"Recorded {stamp['date']} at commit {stamp['commit']} on {stamp['cpu']['model']} "
            f"({stamp['cpu']['cores']} cores; vector flags: {' '.join(vector) or 'none listed'}).")


def commit() -> str:
    """The checked-out commit, ``+changes`` when tracked files other than results differ from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                                  cwd=Path(__file__).resolve().parent).stdout.strip()
        except OSError:  # no git on this machine
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    code = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)experiments/results",
               ":(top,exclude)experiments/benchmarks/results", ":(top,exclude)experiments/RESULTS.md")
    return head + ("+changes" if code else "")  # result files being rewritten are not code changes


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and flags as ``/proc/cpuinfo`` lists them for the first processor
    (elsewhere: the platform's processor name and no flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    return model, sorted((fields.get("flags") or fields.get("Features") or "").split())
