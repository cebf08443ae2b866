"""Curves as results.json stores them: few points, and the same answer at every budget on the grid."""

from __future__ import annotations

import numpy as np

from experiments.curves import CURVE_POINTS, thin_curve, thin_curves
from experiments.frontier import upper_hull
from experiments.sweep import Curve, sweep

RNG = np.random.default_rng(0)
N = 5000
Y = RNG.integers(0, 2, N)
SMALL = np.where(RNG.uniform(size=N) < 0.9, Y, 1 - Y)
EXPERT = np.where(RNG.uniform(size=N) < 0.95, Y, 1 - Y)
FULL = sweep(RNG.uniform(size=N), SMALL, EXPERT, Y, expert_cost=RNG.uniform(0.5, 1.5, N))


def as_curve(stored: dict[str, list[float]]) -> Curve:
    return Curve(**{name: np.asarray(values, dtype=float) for name, values in stored.items()})


def test_a_long_curve_keeps_at_most_one_point_per_budget_plus_its_best() -> None:
    stored = thin_curve(FULL.as_dict(), "defer_rate")
    assert len(FULL.defer_rate) > 10 * CURVE_POINTS
    assert len(stored["defer_rate"]) <= CURVE_POINTS + 1
    assert max(stored["accuracy"]) == max(FULL.as_dict()["accuracy"])


def test_every_stored_point_is_an_operating_point_of_the_full_curve() -> None:
    full = FULL.as_dict()
    stored = thin_curve(full, "defer_rate")
    index = np.searchsorted(full["defer_rate"], stored["defer_rate"])
    for name in full:
        assert np.array_equal(np.asarray(full[name])[index], stored[name]), name


def test_every_budget_on_the_grid_reads_the_same_point() -> None:
    stored = as_curve(thin_curve(FULL.as_dict(), "defer_rate"))
    full = as_curve(FULL.as_dict())
    for budget in np.linspace(0.0, 1.0, CURVE_POINTS):
        assert stored.at_rate(budget) == full.at_rate(budget), budget


def test_a_short_curve_is_kept_whole_and_hulls_thin_along_their_own_axis() -> None:
    short = {"defer_rate": [0.0, 0.5, 1.0], "accuracy": [0.9, 0.95, 0.97]}
    hull_cost, hull_accuracy = upper_hull(FULL.cost_per_1k, FULL.accuracy)
    curves = {"expert": {"confidence": short,
                         "upper hull (cost_per_1k)": {"cost_per_1k": hull_cost.tolist(), "accuracy": hull_accuracy.tolist()}}}
    thinned = thin_curves(curves)["expert"]
    assert thinned["confidence"] == short
    cost = thinned["upper hull (cost_per_1k)"]["cost_per_1k"]
    assert len(cost) <= CURVE_POINTS + 1 and cost[0] == hull_cost[0] and cost[-1] == hull_cost[-1]
