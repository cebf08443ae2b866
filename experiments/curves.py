"""Curves as ``results.json`` stores them: the operating points a fixed grid of budgets picks.

A full curve has one point per distinct deferral score (thousands on a large test split). The
stored curve keeps, for each of ``CURVE_POINTS`` evenly spaced values of its x axis (deferral rate,
or cost for the cost-axis hull), the last point whose x is within that value, exactly as
:meth:`experiments.sweep.Curve.at_rate` answers a budget, plus the most accurate point. So every
stored point is a real operating point, the accuracy at any budget on the grid (every budget of
the shipped configs) is the full curve's, and a curve shorter than the grid is kept whole.
``python -m experiments.curves results/*/results.json`` thins files written with full curves.

>>> curve = {"defer_rate": [0.0, 0.004, 0.01, 0.013, 1.0], "accuracy": [0.9, 0.95, 0.93, 0.97, 0.96]}
>>> thin_curve(curve, "defer_rate", points=3)
{'defer_rate': [0.0, 0.013, 1.0], 'accuracy': [0.9, 0.97, 0.96]}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

CURVE_POINTS = 101  # budgets 0%, 1%, ..., 100%


def thin_curve(curve: dict[str, list[float]], x: str, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """The points of ``curve`` (a dict of equally long lists, sorted by ``x``) picked by a grid over ``x``."""
    values = np.asarray(curve[x], dtype=float)
    if len(values) <= points:
        return curve
    span = values[-1] - values[0]
    grid = np.linspace(values[0], values[-1], points)
    picked = np.searchsorted(values, grid + 1e-12 * max(span, 1.0), side="right") - 1
    keep = np.union1d(picked, [int(np.argmax(curve["accuracy"]))])
    return {name: [column[i] for i in keep] for name, column in curve.items()}


def thin_curves(curves: dict[str, dict[str, dict[str, list[float]]]], points: int = CURVE_POINTS) -> dict[str, Any]:
    """Every expert's policy curves and hulls, thinned along their own x axis."""
    return {
        expert: {name: thin_curve(curve, "defer_rate" if "defer_rate" in curve else "cost_per_1k", points)
                 for name, curve in by_policy.items()}
        for expert, by_policy in curves.items()
    }


def rethin(path: str | Path) -> None:
    """Thin the curves of a ``results.json`` in place and redraw its frontier figures from it."""
    from experiments import plots

    path = Path(path)
    results = json.loads(path.read_text())
    results["curves"] = thin_curves(results["curves"])
    path.write_text(json.dumps(results, indent=1))
    plots.frontiers(results, path.parent)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        rethin(argument)
