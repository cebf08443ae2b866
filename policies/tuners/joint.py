"""Learn-then-Test for two risks at once: accepted error ≤ α and deferral rate ≤ β."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from policies.tuners.base import BudgetTuner, Solution, check_rate
from policies.tuners.bounds import binomial_p_value, clopper_pearson_upper
from policies.tuners.risks import Grid, RiskTable, as_grid, last_true


class JointTuner(BudgetTuner):
    """Accepted error ≤ ``alpha`` *and* deferral rate ≤ ``max_rate``, jointly with probability ≥ 1-δ.

    Both procedures test the rules of ``grid``, fixed before the certify part is seen (e.g.
    ``threshold_grid(fit-part scores, max_rate=max_rate)``), and keep the certified rule that
    defers least.

    ``procedure="fixed-sequence"`` (Learn-then-Test, two families at ``δ/2`` each, so the union
    bound gives ``δ``): the *rate* family walks every threshold down from "defer nothing" and
    certifies those whose Clopper-Pearson bound stays within ``max_rate`` (valid for a monotone
    risk on any fixed, however fine, grid); the *error* family walks the grid in its fixed order
    (deferring most first) and stops at the first rule whose binomial test fails; only the rules
    before that failure are certified, even if a later one would pass. ``procedure="bonferroni"``
    tests each grid rule at ``δ/len(grid)`` with the larger of the two p-values.

    >>> import numpy as np
    >>> from policies.tuners.risks import threshold_grid
    >>> rng = np.random.default_rng(0)
    >>> scores, fit_scores = rng.random(2000), rng.random(1000)
    >>> correct = rng.random(2000) > scores / 4
    >>> grid = threshold_grid(fit_scores, max_rate=0.6)
    >>> JointTuner(alpha=0.08, max_rate=0.6, grid=grid).fit(scores, correct).certificate_.holds
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
        grid: Grid | ArrayLike | None = None,
    ) -> None:
        self.alpha = alpha
        self.max_rate = max_rate
        self.delta = delta
        self.procedure = procedure
        self.grid = grid

    @property
    def targets(self) -> dict[str, float]:
        return {"accepted_error": float(self.alpha), "defer_rate": float(self.max_rate)}

    def _check_params(self) -> None:
        super()._check_params()
        check_rate("alpha", self.alpha)
        check_rate("max_rate", self.max_rate)
        if self.procedure not in ("fixed-sequence", "bonferroni"):
            raise ValueError(f"procedure must be 'fixed-sequence' or 'bonferroni', got '{self.procedure}'")
        as_grid(self.grid, type(self).__name__)

    def _solve(self, data: RiskTable) -> Solution:
        assert data.errors is not None
        grid = as_grid(self.grid, type(self).__name__)
        n, k = data.n, len(grid.threshold)
        level = self.delta / 2 if self.procedure == "fixed-sequence" else self.delta / k
        positions = data.locate(grid.threshold, grid.tie_break)
        accepted, errors = data.at(data.accepted, positions), data.at(data.errors, positions)
        rate_ok = binomial_p_value(n - accepted, n, self.max_rate) <= level
        error_ok = binomial_p_value(errors, accepted, self.alpha) <= level
        if self.procedure == "fixed-sequence":
            error_ok = np.logical_and.accumulate(error_ok, axis=1)   # certified only up to the first failure
        chosen = last_true(rate_ok & error_ok)
        feasible = chosen >= 0
        pick = np.maximum(chosen, 0)
        error_upper = clopper_pearson_upper(errors, accepted, level)
        rate_upper = clopper_pearson_upper(n - accepted, n, level)

        def at_pick(table: np.ndarray) -> np.ndarray:
            return np.where(feasible, np.take_along_axis(table, pick[:, None], 1)[:, 0], np.nan)

        within_budget = np.where(rate_ok, error_upper, np.nan)
        any_within = rate_ok.any(axis=1)
        lowest = np.where(any_within, np.argmin(np.where(rate_ok, error_upper, 2.0), axis=1), 0)[:, None]
        best = {
            "accepted_error": np.where(any_within, np.take_along_axis(within_budget, lowest, 1)[:, 0], np.nan),
            "defer_rate": np.where(any_within, 1.0 - np.take_along_axis(accepted, lowest, 1)[:, 0] / n, np.nan),
            "certifiable_defer_rate": rate_upper.min(axis=1),
        }
        bound = {"accepted_error": at_pick(error_upper), "defer_rate": at_pick(rate_upper)}
        return Solution(pick, bound, best, feasible, rule=(grid.threshold[pick], grid.tie_break[pick]),
                        passed=(grid.threshold, grid.tie_break, rate_ok & error_ok))

    def _method(self) -> str:
        k = len(as_grid(self.grid, "grid").threshold)
        if self.procedure == "bonferroni":
            return f"Learn-then-Test (binomial p-values, Bonferroni over {k} thresholds fixed before certification)"
        return (f"Learn-then-Test (binomial p-values, fixed-sequence testing over {k} thresholds fixed before "
                "certification, δ/2 per family)")

    def _statement(self) -> str:
        return (
            f"P(accepted_error > {self.alpha} or defer_rate > {self.max_rate}) ≤ {self.delta} "
            "over the draw of the certify part"
        )

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        head = f"accepted error ≤ {self.alpha} with deferral rate ≤ {self.max_rate} cannot be certified at " \
               f"δ={self.delta} with n={n}: "
        if np.isnan(best["accepted_error"]):
            return head + (f"no tested threshold keeps the deferral rate certifiably within {self.max_rate}; the "
                           f"lowest certifiable deferral rate among them is {best['certifiable_defer_rate']:.4g}")
        return head + (f"within that deferral budget the lowest certifiable accepted error is "
                       f"{best['accepted_error']:.4g} (deferring {best['defer_rate']:.1%})")
