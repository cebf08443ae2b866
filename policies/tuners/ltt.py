"""Learn-then-Test tuner for the error of accepted answers (Angelopoulos et al., 2021).

Each candidate rule of a grid fixed before the certify part is seen (:func:`threshold_grid` on
the fit part's scores) is a hypothesis test of "accepted error > α" with an exact binomial
p-value; Bonferroni over the grid makes every rule it certifies valid simultaneously with
probability ≥ 1-δ. A grid placed at the certify part's own quantiles would make the tested
hypotheses depend on the data they are tested on, which the guarantee does not allow.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from policies.tuners.base import BudgetTuner, Solution, check_rate
from policies.tuners.bounds import binomial_p_value, clopper_pearson_upper
from policies.tuners.risks import Grid, RiskTable, as_grid, last_true


class AcceptedErrorTuner(BudgetTuner):
    """Error of accepted answers ≤ ``alpha`` with probability ≥ 1-``delta`` (Learn-then-Test).

    Tests each rule of ``grid`` with an exact binomial p-value for "accepted error > α",
    Bonferroni-corrected (each at ``δ/len(grid)``), and keeps the certified rule that defers least.

    >>> import numpy as np
    >>> from policies.tuners.risks import threshold_grid
    >>> rng = np.random.default_rng(0)
    >>> scores, fit_scores = rng.random(2000), rng.random(1000)
    >>> correct = rng.random(2000) > scores / 4
    >>> tuner = AcceptedErrorTuner(alpha=0.08, delta=0.1, grid=threshold_grid(fit_scores)).fit(scores, correct)
    >>> tuner.certificate_.bound["accepted_error"] <= 0.08
    True
    """

    delta: float
    kind = "accepted-error"
    needs = ("small_correct",)

    def __init__(self, alpha: float = 0.05, delta: float = 0.1, grid: Grid | ArrayLike | None = None) -> None:
        self.alpha = alpha
        self.delta = delta
        self.grid = grid

    @property
    def targets(self) -> dict[str, float]:
        return {"accepted_error": float(self.alpha)}

    def _check_params(self) -> None:
        super()._check_params()
        check_rate("alpha", self.alpha)
        as_grid(self.grid, type(self).__name__)

    def _solve(self, data: RiskTable) -> Solution:
        assert data.errors is not None
        grid = as_grid(self.grid, type(self).__name__)
        level = self.delta / len(grid.threshold)
        positions = data.locate(grid.threshold, grid.tie_break)
        accepted, errors = data.at(data.accepted, positions), data.at(data.errors, positions)
        upper = clopper_pearson_upper(errors, accepted, level)
        valid = binomial_p_value(errors, accepted, self.alpha) <= level
        chosen = last_true(valid)
        feasible = chosen >= 0
        pick = np.maximum(chosen, 0)
        bound = np.where(feasible, np.take_along_axis(upper, pick[:, None], 1)[:, 0], np.nan)
        lowest = np.argmin(upper, axis=1)[:, None]
        best = {
            "accepted_error": np.take_along_axis(upper, lowest, 1)[:, 0],
            "defer_rate": 1.0 - np.take_along_axis(accepted, lowest, 1)[:, 0] / data.n,
        }
        return Solution(pick, {"accepted_error": bound}, best, feasible,
                        rule=(grid.threshold[pick], grid.tie_break[pick]), passed=(grid.threshold, grid.tie_break, valid))

    def _method(self) -> str:
        return (f"Learn-then-Test (binomial p-values, Bonferroni over {len(as_grid(self.grid, 'grid').threshold)} "
                "thresholds fixed before certification)")

    def _statement(self) -> str:
        return f"P(accepted_error > {self.alpha}) ≤ {self.delta} over the draw of the certify part"

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        return (
            f"accepted error ≤ {self.alpha} cannot be certified at δ={self.delta} with n={n}: the lowest "
            f"certifiable accepted error among the tested thresholds is {best['accepted_error']:.4g} "
            f"(deferring {best['defer_rate']:.1%})"
        )
