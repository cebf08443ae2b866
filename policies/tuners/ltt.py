"""Learn-then-Test tuner for the error of accepted answers (Angelopoulos et al., 2021).

Each candidate threshold is a hypothesis test of "accepted error > α" with an exact binomial
p-value; a family-wise error correction over the tested thresholds makes every threshold it
certifies valid simultaneously with probability ≥ 1-δ.
"""

from __future__ import annotations

import numpy as np

from policies.tuners.base import BudgetTuner, Solution, check_rate
from policies.tuners.bounds import binomial_p_value, clopper_pearson_upper
from policies.tuners.risks import RiskTable, last_true


class AcceptedErrorTuner(BudgetTuner):
    """Error of accepted answers ≤ ``alpha`` with probability ≥ 1-``delta`` (Learn-then-Test).

    Tests ``n_grid`` thresholds (calibration-score quantiles) with exact binomial p-values for
    "accepted error > α", Bonferroni-corrected (each at ``δ/n_grid``), and keeps the certified
    threshold that defers least.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.random(2000)
    >>> correct = rng.random(2000) > scores / 4
    >>> tuner = AcceptedErrorTuner(alpha=0.08, delta=0.1).fit(scores, correct)
    >>> tuner.certificate_.bound["accepted_error"] <= 0.08
    True
    """

    delta: float
    kind = "accepted-error"
    needs = ("small_correct",)

    def __init__(self, alpha: float = 0.05, delta: float = 0.1, n_grid: int = 20) -> None:
        self.alpha = alpha
        self.delta = delta
        self.n_grid = n_grid

    @property
    def targets(self) -> dict[str, float]:
        return {"accepted_error": float(self.alpha)}

    def _check_params(self) -> None:
        super()._check_params()
        check_rate("alpha", self.alpha)
        if self.n_grid < 1:
            raise ValueError(f"n_grid must be at least 1, got {self.n_grid}")

    def _solve(self, data: RiskTable) -> Solution:
        assert data.errors is not None
        level = self.delta / self.n_grid
        positions = data.grid(self.n_grid)
        accepted, errors = data.at(data.accepted, positions), data.at(data.errors, positions)
        upper = clopper_pearson_upper(errors, accepted, level)
        valid = binomial_p_value(errors, accepted, self.alpha) <= level
        chosen = last_true(valid)
        feasible = chosen >= 0
        pick = np.maximum(chosen, 0)[:, None]
        bound = np.where(feasible, np.take_along_axis(upper, pick, 1)[:, 0], np.nan)
        lowest = np.argmin(upper, axis=1)[:, None]
        best = {
            "accepted_error": np.take_along_axis(upper, lowest, 1)[:, 0],
            "defer_rate": 1.0 - np.take_along_axis(accepted, lowest, 1)[:, 0] / data.n,
        }
        return Solution(np.take_along_axis(positions, pick, 1)[:, 0], {"accepted_error": bound}, best, feasible)

    def _method(self) -> str:
        return f"Learn-then-Test (binomial p-values, Bonferroni over {self.n_grid} thresholds)"

    def _statement(self) -> str:
        return f"P(accepted_error > {self.alpha}) ≤ {self.delta} over the draw of the certify part"

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        return (
            f"accepted error ≤ {self.alpha} cannot be certified at δ={self.delta} with n={n}: the lowest "
            f"certifiable accepted error is {best['accepted_error']:.4g} (deferring {best['defer_rate']:.1%})"
        )
