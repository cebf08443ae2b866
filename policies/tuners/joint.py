"""Learn-then-Test for two risks at once: accepted error ≤ α and deferral rate ≤ β."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.stats import binom

from policies.tuners.base import BudgetTuner, Solution, check_rate
from policies.tuners.bounds import binomial_p_value, clopper_pearson_upper
from policies.tuners.risks import RiskTable, last_true


class JointTuner(BudgetTuner):
    """Accepted error ≤ ``alpha`` *and* deferral rate ≤ ``max_rate``, jointly with probability ≥ 1-δ.

    ``procedure="fixed-sequence"`` (Learn-then-Test, two families at ``δ/2`` each): the rate
    family walks thresholds down from "defer nothing" while the Clopper-Pearson bound stays within
    ``max_rate``; the error family then walks thresholds up from the lowest rate-certified one
    and stops at the first that fails. ``procedure="bonferroni"`` tests ``n_grid`` quantile
    thresholds at ``δ/n_grid`` with the larger of the two p-values. Either way the certified
    threshold that defers least is kept.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.random(2000)
    >>> correct = rng.random(2000) > scores / 4
    >>> JointTuner(alpha=0.08, max_rate=0.6).fit(scores, correct).certificate_.holds
    True
    """

    delta: float
    kind = "joint"
    needs = ("small_correct",)

    def __init__(
        self,
        alpha: float = 0.05,
        max_rate: float = 0.2,
        delta: float = 0.1,
        procedure: Literal["fixed-sequence", "bonferroni"] = "fixed-sequence",
        n_grid: int = 20,
    ) -> None:
        self.alpha = alpha
        self.max_rate = max_rate
        self.delta = delta
        self.procedure = procedure
        self.n_grid = n_grid

    @property
    def targets(self) -> dict[str, float]:
        return {"accepted_error": float(self.alpha), "defer_rate": float(self.max_rate)}

    def _check_params(self) -> None:
        super()._check_params()
        check_rate("alpha", self.alpha)
        check_rate("max_rate", self.max_rate)
        if self.procedure not in ("fixed-sequence", "bonferroni"):
            raise ValueError(f"procedure must be 'fixed-sequence' or 'bonferroni', got '{self.procedure}'")
        if self.n_grid < 1:
            raise ValueError(f"n_grid must be at least 1, got {self.n_grid}")

    def _solve(self, data: RiskTable) -> Solution:
        if self.procedure == "bonferroni":
            return self._solve_bonferroni(data)
        return self._solve_fixed_sequence(data)

    def _solve_fixed_sequence(self, data: RiskTable) -> Solution:
        assert data.errors is not None
        n, level = data.n, self.delta / 2
        allowed = int(np.count_nonzero(binom.cdf(np.arange(n + 1), n, self.max_rate) <= level)) - 1
        start = n - 1 - allowed
        positions = np.broadcast_to(np.arange(start, n + 1), (data.m, n + 1 - start))
        accepted, errors = data.at(data.accepted, positions), data.at(data.errors, positions)
        passed = binomial_p_value(errors, accepted, self.alpha) <= level
        chosen = np.where(passed.all(axis=1), passed.shape[1], np.argmin(passed, axis=1)) - 1
        feasible = chosen >= 0
        pick = np.maximum(chosen, 0)[:, None]
        picked_accepted = np.take_along_axis(accepted, pick, 1)[:, 0]
        picked_errors = np.take_along_axis(errors, pick, 1)[:, 0]
        bound = {
            "accepted_error": np.where(feasible, clopper_pearson_upper(picked_errors, picked_accepted, level), np.nan),
            "defer_rate": np.where(feasible, clopper_pearson_upper(n - picked_accepted, n, level), np.nan),
        }
        best = {
            "accepted_error": clopper_pearson_upper(errors[:, 0], accepted[:, 0], level),
            "defer_rate": 1.0 - accepted[:, 0] / n,
        }
        return Solution(start + np.maximum(chosen, 0), bound, best, feasible)

    def _solve_bonferroni(self, data: RiskTable) -> Solution:
        assert data.errors is not None
        n, level = data.n, self.delta / self.n_grid
        positions = data.grid(self.n_grid)
        accepted, errors = data.at(data.accepted, positions), data.at(data.errors, positions)
        rate_ok = binomial_p_value(n - accepted, n, self.max_rate) <= level
        valid = rate_ok & (binomial_p_value(errors, accepted, self.alpha) <= level)
        chosen = last_true(valid)
        feasible = chosen >= 0
        pick = np.maximum(chosen, 0)[:, None]
        error_upper = clopper_pearson_upper(errors, accepted, level)
        rate_upper = clopper_pearson_upper(n - accepted, n, level)
        bound = {
            "accepted_error": np.where(feasible, np.take_along_axis(error_upper, pick, 1)[:, 0], np.nan),
            "defer_rate": np.where(feasible, np.take_along_axis(rate_upper, pick, 1)[:, 0], np.nan),
        }
        within_budget = np.where(rate_ok, error_upper, np.inf)
        lowest = np.argmin(within_budget, axis=1)[:, None]
        best = {
            "accepted_error": np.take_along_axis(within_budget, lowest, 1)[:, 0],
            "defer_rate": 1.0 - np.take_along_axis(accepted, lowest, 1)[:, 0] / n,
        }
        return Solution(np.take_along_axis(positions, pick, 1)[:, 0], bound, best, feasible)

    def _method(self) -> str:
        if self.procedure == "bonferroni":
            return f"Learn-then-Test (binomial p-values, Bonferroni over {self.n_grid} thresholds)"
        return "Learn-then-Test (binomial p-values, fixed-sequence testing, δ/2 per family)"

    def _statement(self) -> str:
        return (
            f"P(accepted_error > {self.alpha} or defer_rate > {self.max_rate}) ≤ {self.delta} "
            "over the draw of the certify part"
        )

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        return (
            f"accepted error ≤ {self.alpha} with deferral rate ≤ {self.max_rate} cannot be certified at "
            f"δ={self.delta} with n={n}: within that deferral budget the lowest certifiable accepted error is "
            f"{best['accepted_error']:.4g} (deferring {best['defer_rate']:.1%})"
        )
