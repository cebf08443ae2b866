"""Sweep benchmark: the vectorised threshold sweep against the naive per-threshold loop.

For n = 10^4, 10^5, 10^6 random samples (distinct scores, so n + 1 thresholds), times
:func:`experiments.sweep.sweep` (sort once + cumulative sums, O(n log n)) and the naive loop
(O(n^2); run in full up to n = 10^4, otherwise timed on a prefix of
the thresholds and extrapolated linearly, which the output marks). Both give identical curves
(``tests/test_sweep.py``).

Writes ``experiments/benchmarks/results/sweep.{json,md}`` and prints the JSON.

    python -m experiments.benchmarks.bench_sweep
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from experiments.benchmarks.results_io import write_results
from experiments.sweep import sweep, sweep_naive
from policies.ties import defer_mask

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (10_000, 100_000, 1_000_000)
NAIVE_FULL_UP_TO = 10_000  # the naive loop runs in full up to this n
NAIVE_THRESHOLDS = 2_000  # above it, the loop is timed on this many thresholds, then scaled to all n + 1


def random_case(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return dict(scores=rng.uniform(size=n), small_pred=np.where(rng.uniform(size=n) < 0.85, y, 1 - y),
                expert_pred=np.where(rng.uniform(size=n) < 0.95, y, 1 - y), y=y, expert_cost=rng.uniform(0.5, 2, n))


def time_vectorised(case: dict[str, np.ndarray], repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        sweep(**case)
        best = min(best, time.perf_counter() - start)
    return float(best)


def time_naive(case: dict[str, np.ndarray]) -> tuple[float, bool]:
    """Seconds for all n + 1 thresholds; measured on a prefix of thresholds when n is large."""
    n = len(case["scores"])
    if n <= NAIVE_FULL_UP_TO:
        start = time.perf_counter()
        sweep_naive(**case)
        return time.perf_counter() - start, False
    top = np.sort(case["scores"])[::-1][: NAIVE_THRESHOLDS - 1]
    start = time.perf_counter()
    for threshold in top:  # exactly the work of sweep_naive's loop, on a prefix of its thresholds
        defer = defer_mask(case["scores"], threshold)
        pred = np.where(defer, case["expert_pred"], case["small_pred"])
        np.sum((pred == 1) & (case["y"] == 1)), np.sum((pred == 1) & (case["y"] != 1))
        np.sum((pred != 1) & (case["y"] == 1)), np.sum(case["expert_cost"][defer]), np.mean(pred == case["y"])
    elapsed = time.perf_counter() - start
    return elapsed * (n + 1) / len(top), True


def main() -> dict[str, Any]:
    rows = []
    for n in SIZES:
        case = random_case(n)
        fast = time_vectorised(case)
        naive, extrapolated = time_naive(case)
        rows.append({"n": n, "thresholds": n + 1, "vectorised_s": fast, "naive_s": naive,
                     "naive_extrapolated": extrapolated, "speedup": naive / fast})
        print(f"n={n:>9,}: vectorised {fast:.4f}s, naive {naive:.1f}s{' (extrapolated)' if extrapolated else ''}, "
              f"speed-up {naive / fast:,.0f}x", flush=True)
    small = random_case(2000, seed=1)
    exact_match = bool(np.allclose(sweep(**small).accuracy, sweep_naive(**small).accuracy))
    out = {"benchmark": "sweep", "when": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
           "naive_thresholds_timed": NAIVE_THRESHOLDS, "identical_curves_n2000": exact_match, "rows": rows}
    write_results(RESULTS, "sweep", out, markdown, indent=1)
    print(json.dumps(out, indent=1))
    return out


def markdown(out: dict[str, Any]) -> str:
    """The timings as a markdown table."""
    machine = out["machine"]
    lines = ["# Sweep benchmark (`experiments/benchmarks/bench_sweep.py`)", "",
             f"All n + 1 thresholds of n random samples; {machine['cpus']} CPU cores, numpy {machine['numpy']}. "
             f"Above n = {NAIVE_FULL_UP_TO:,} the naive loop is timed on its first {out['naive_thresholds_timed']:,} "
             "thresholds and scaled linearly to all of them (marked *).", "",
             "| n | vectorised (s) | naive loop (s) | speed-up |", "|---|---|---|---|"]
    for row in out["rows"]:
        mark = "*" if row["naive_extrapolated"] else ""
        lines.append(f"| {row['n']:,} | {row['vectorised_s']:.4f} | {row['naive_s']:,.1f}{mark} | {row['speedup']:,.0f}x |")
    lines += ["", f"Vectorised and naive curves identical on n = 2,000: {out['identical_curves_n2000']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
