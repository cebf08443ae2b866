"""Budget tuners: pick a deferral threshold on a calibration split and certify what it guarantees.

A sample is deferred when ``score > threshold`` (strictly). Every tuner follows the sklearn
pattern: construct with the target, ``fit(scores, small_correct=None, expert_cost=None)`` on the
calibration split, read ``threshold_`` and ``certificate_``. Targets that cannot be met raise
:class:`~policies.certificate.InfeasibleTarget` with the best achievable value.

==================  ==============================================  =================================
tuner               method                                          guarantee (new exchangeable data)
==================  ==============================================  =================================
RateTuner           conformal risk control (split-conformal         E[defer_rate] ≤ β
                    quantile) on the deferral indicator
RateTuner(delta=δ)  Clopper-Pearson bound = fixed-sequence test     P(defer_rate > β) ≤ δ
CostTuner           conformal risk control on the bounded           E[cost_per_1k] ≤ target
                    per-request cost
AcceptedErrorTuner  Learn-then-Test, binomial p-values, Bonferroni  P(accepted_error > α) ≤ δ
                    over a grid of calibration-score quantiles
JointTuner          Learn-then-Test: fixed-sequence (rate family,   P(accepted_error > α or
                    then error family, δ/2 each) or Bonferroni      defer_rate > β) ≤ δ
==================  ==============================================  =================================

Probabilities are over the draw of the calibration split. ``fit_thresholds`` runs the same
procedure on many calibration sets at once (rows of a 2-D array), which is how
:func:`policies.evaluation.budget_adherence` checks the guarantees over hundreds of splits.

>>> import numpy as np
>>> scores = np.random.default_rng(0).random(999)
>>> tuner = RateTuner(target=0.2).fit(scores)
>>> tuner.certificate_.achieved["defer_rate"] <= 0.2
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta, binom
from sklearn.base import BaseEstimator

from cascade.config import BudgetConfig
from cascade.types import CostModel
from policies.certificate import IN_EXPECTATION, WITH_PROBABILITY, BudgetKind, Certificate, Guarantee, InfeasibleTarget

_EPS = 1e-9


def clopper_pearson_upper(successes: ArrayLike, trials: ArrayLike, level: float) -> np.ndarray:
    """One-sided upper confidence bound on a binomial proportion, valid with probability ≥ 1-level.

    >>> float(clopper_pearson_upper(0, 100, 0.05).round(4))
    0.0295
    """
    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    full = successes >= trials
    bound = beta.ppf(1.0 - level, successes + 1.0, np.where(full, 1.0, trials - successes))
    return np.where(full, 1.0, bound)


def binomial_p_value(successes: ArrayLike, trials: ArrayLike, level: float) -> np.ndarray:
    """p-value of the null "the true proportion exceeds ``level``": ``P(Bin(trials, level) ≤ successes)``."""
    return binom.cdf(successes, trials, level)


class _Sorted:
    """``m`` calibration sets of ``n`` samples, sorted by score, with the counts every tuner needs.

    Candidate thresholds are indexed by a *position* in ``[-1, n]``: ``-1`` is ``-inf`` (defer
    all), ``p`` in ``[0, n)`` is the ``p``-th smallest score, ``n`` is ``+inf`` (defer none).
    Ties are handled: at a tied score every tied sample is accepted.
    """

    def __init__(self, scores: np.ndarray, small_correct: np.ndarray | None, expert_cost: np.ndarray | None) -> None:
        m, n = scores.shape
        order = np.argsort(scores, axis=1, kind="stable")
        ascending = np.take_along_axis(scores, order, axis=1)
        last_of_tie = np.ones((m, n), dtype=bool)
        last_of_tie[:, :-1] = ascending[:, 1:] != ascending[:, :-1]
        tie_end = np.minimum.accumulate(np.where(last_of_tie, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
        edge = np.zeros((m, 1))
        self.m, self.n = m, n
        self.thresholds = np.hstack([edge - np.inf, ascending, edge + np.inf])
        self.accepted = np.hstack([edge, tie_end + 1.0, edge + n])
        self.errors: np.ndarray | None = None
        self.cost_descending: np.ndarray | None = None
        if small_correct is not None:
            wrong = np.cumsum(~np.take_along_axis(small_correct, order, axis=1), axis=1)
            self.errors = np.hstack([edge, np.take_along_axis(wrong, tie_end, axis=1), wrong[:, -1:]]).astype(float)
        if expert_cost is not None:
            self.cost_descending = np.take_along_axis(expert_cost, order, axis=1)[:, ::-1]

    def at(self, table: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rows of ``table`` (one of the ``(m, n + 2)`` tables above) at ``positions`` (``(m,)`` or ``(m, k)``)."""
        positions = np.asarray(positions)
        index = (positions if positions.ndim == 2 else positions[:, None]) + 1
        picked = np.take_along_axis(table, np.broadcast_to(index, (self.m, index.shape[1])), axis=1)
        return picked if positions.ndim == 2 else picked[:, 0]

    def grid(self, n_grid: int) -> np.ndarray:
        """``n_grid`` positions accepting about ``1/n_grid, 2/n_grid, ...`` of the set; the last is ``+inf``."""
        counts = np.ceil(np.arange(1, n_grid + 1) * self.n / n_grid).astype(int)
        positions = counts - 1
        positions[-1] = self.n
        return np.broadcast_to(positions, (self.m, n_grid))


@dataclass
class _Solution:
    threshold: np.ndarray
    bound: dict[str, np.ndarray]
    best: dict[str, np.ndarray] = field(default_factory=dict)


class BudgetTuner(BaseEstimator):
    """Shared ``fit`` / ``fit_thresholds`` / ``evaluate``; subclasses implement ``_solve``."""

    kind: ClassVar[BudgetKind]
    needs: ClassVar[tuple[str, ...]] = ()
    delta: float | None = None

    @property
    def targets(self) -> dict[str, float]:
        """Target per metric, e.g. ``{"defer_rate": 0.2}``."""
        raise NotImplementedError

    @property
    def guarantee(self) -> Guarantee:
        """``"in expectation"`` or ``"with probability ≥ 1-δ"``."""
        return IN_EXPECTATION if self.delta is None else WITH_PROBABILITY

    def fit(
        self, scores: ArrayLike, small_correct: ArrayLike | None = None, expert_cost: ArrayLike | None = None
    ) -> Self:
        """Pick the threshold on one calibration split; set ``threshold_`` and ``certificate_``."""
        scores, small_correct, expert_cost = self._inputs(scores, small_correct, expert_cost)
        solution = self._solve(_Sorted(scores, small_correct, expert_cost))
        n = scores.shape[1]
        if np.isnan(solution.threshold[0]):
            best = {metric: float(values[0]) for metric, values in solution.best.items()}
            raise InfeasibleTarget(self._infeasible(n, best), best)
        threshold = float(solution.threshold[0])
        achieved = self.evaluate(scores, threshold, small_correct, expert_cost)
        self.threshold_ = threshold
        self.certificate_ = Certificate(
            kind=self.kind,
            method=self._method(),
            threshold=threshold,
            target=self.targets,
            achieved={metric: float(values[0]) for metric, values in achieved.items()},
            bound={metric: float(values[0]) for metric, values in solution.bound.items()},
            guarantee=self.guarantee,
            statement=self._statement(),
            n=n,
            delta=self.delta,
        )
        return self

    def fit_thresholds(
        self, scores: ArrayLike, small_correct: ArrayLike | None = None, expert_cost: ArrayLike | None = None
    ) -> np.ndarray:
        """Thresholds for each row of ``scores`` (one calibration set per row); NaN where infeasible."""
        return self._solve(_Sorted(*self._inputs(scores, small_correct, expert_cost))).threshold

    def evaluate(
        self,
        scores: ArrayLike,
        thresholds: ArrayLike,
        small_correct: ArrayLike | None = None,
        expert_cost: ArrayLike | None = None,
    ) -> dict[str, np.ndarray]:
        """Realised ``defer_rate`` (and ``accepted_error``, ``cost_per_1k`` when given) per row.

        ``accepted_error`` is 0 for a row that accepts nothing.
        """
        scores = np.atleast_2d(np.asarray(scores, dtype=float))
        defer = scores > np.asarray(thresholds, dtype=float).reshape(-1, 1)
        metrics = {"defer_rate": defer.mean(axis=1)}
        if small_correct is not None:
            accepted = ~defer
            errors = (accepted & ~np.atleast_2d(np.asarray(small_correct, dtype=bool))).sum(axis=1)
            count = accepted.sum(axis=1)
            metrics["accepted_error"] = np.divide(errors, count, out=np.zeros(len(count)), where=count > 0)
        if expert_cost is not None:
            spend = (np.atleast_2d(np.asarray(expert_cost, dtype=float)) * defer).mean(axis=1)
            metrics["cost_per_1k"] = 1000.0 * (self._cost_per_request() + spend)
        return metrics

    def _inputs(
        self, scores: ArrayLike, small_correct: ArrayLike | None, expert_cost: ArrayLike | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        self._check_params()
        scores = np.atleast_2d(np.asarray(scores, dtype=float))
        if scores.ndim != 2 or scores.shape[1] == 0:
            raise ValueError(f"scores must be a non-empty 1-D array (or 2-D, one set per row), not {scores.shape}")
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN")
        given = {"small_correct": small_correct, "expert_cost": expert_cost}
        for name in self.needs:
            if given[name] is None:
                raise ValueError(f"{type(self).__name__} needs {name} on the calibration split")
        arrays: dict[str, np.ndarray | None] = {}
        for name, values in given.items():
            if values is None:
                arrays[name] = None
                continue
            array = np.atleast_2d(np.asarray(values, dtype=bool if name == "small_correct" else float))
            if array.shape != scores.shape:
                raise ValueError(f"{name} has shape {array.shape}, scores have {scores.shape}")
            arrays[name] = array
        if arrays["expert_cost"] is not None and (arrays["expert_cost"] < 0).any():
            raise ValueError("expert_cost must be non-negative")
        return scores, arrays["small_correct"], arrays["expert_cost"]

    def _solve(self, data: _Sorted) -> _Solution:
        raise NotImplementedError

    def _check_params(self) -> None:
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")

    def _cost_per_request(self) -> float:
        return 0.0

    def _method(self) -> str:
        raise NotImplementedError

    def _statement(self) -> str:
        raise NotImplementedError

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        raise NotImplementedError


def _check_rate(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")


class RateTuner(BudgetTuner):
    """Deferral rate ≤ ``target``: in expectation (``delta=None``) or with probability ≥ 1-δ.

    In expectation it is the split-conformal quantile (conformal risk control on the 0/1 deferral
    loss): at most ``⌊(n+1)β⌋ - 1`` calibration samples lie above the threshold. With ``delta``
    it keeps the Clopper-Pearson upper bound of the deferral rate at or below the target.

    >>> import numpy as np
    >>> RateTuner(target=0.1, delta=0.05).fit(np.linspace(0, 1, 1000)).certificate_.bound["defer_rate"] <= 0.1
    True
    """

    kind = "rate"

    def __init__(self, target: float = 0.2, delta: float | None = None) -> None:
        self.target = target
        self.delta = delta

    @property
    def targets(self) -> dict[str, float]:
        return {"defer_rate": float(self.target)}

    def _check_params(self) -> None:
        super()._check_params()
        _check_rate("target", self.target)

    def _solve(self, data: _Sorted) -> _Solution:
        n = data.n
        if self.delta is None:
            allowed = math.floor((n + 1) * self.target - 1 + _EPS)
        else:
            allowed = int(np.count_nonzero(binom.cdf(np.arange(n + 1), n, self.target) <= self.delta)) - 1
        position = np.full(data.m, n - 1 - min(max(allowed, -1), n))
        deferred = n - data.at(data.accepted, position)
        if self.delta is None:
            bound = (deferred + 1) / (n + 1)
        else:
            bound = clopper_pearson_upper(deferred, n, self.delta)
        bound = np.where(position == n, 0.0, bound)
        return _Solution(data.at(data.thresholds, position), {"defer_rate": bound})

    def _method(self) -> str:
        return "conformal risk control" if self.delta is None else "Clopper-Pearson upper bound"

    def _statement(self) -> str:
        if self.delta is None:
            return f"E[defer_rate] ≤ {self.target} on new requests exchangeable with the calibration split"
        return f"P(defer_rate > {self.target}) ≤ {self.delta} over the draw of the calibration split"


class CostTuner(BudgetTuner):
    """Expected cost per 1k requests ≤ ``target_per_1k`` (conformal risk control).

    The per-request cost is ``small_cost + expert_cost · [deferred]``; conformal risk control
    needs an upper bound on it, ``max_expert_cost`` (default: the largest calibration cost, i.e.
    assuming no request costs more than the dearest calibration request).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tuner = CostTuner(target_per_1k=150.0).fit(rng.random(999), expert_cost=np.ones(999))
    >>> tuner.certificate_.bound["cost_per_1k"] <= 150.0
    True
    """

    kind = "cost"
    needs = ("expert_cost",)

    def __init__(
        self, target_per_1k: float = 400.0, small_cost: float = 0.0, max_expert_cost: float | None = None
    ) -> None:
        self.target_per_1k = target_per_1k
        self.small_cost = small_cost
        self.max_expert_cost = max_expert_cost

    @property
    def targets(self) -> dict[str, float]:
        return {"cost_per_1k": float(self.target_per_1k)}

    def _check_params(self) -> None:
        super()._check_params()
        if self.target_per_1k <= 0 or self.small_cost < 0:
            raise ValueError("target_per_1k must be positive and small_cost non-negative")

    def _cost_per_request(self) -> float:
        return float(self.small_cost)

    def _solve(self, data: _Sorted) -> _Solution:
        assert data.cost_descending is not None
        n = data.n
        budget = self.target_per_1k / 1000.0 - self.small_cost
        worst = data.cost_descending.max(axis=1)
        if self.max_expert_cost is not None:
            if (worst > self.max_expert_cost).any():
                raise ValueError(f"a calibration cost exceeds max_expert_cost={self.max_expert_cost}")
            worst = np.full(data.m, float(self.max_expert_cost))
        spent = np.hstack([np.zeros((data.m, 1)), np.cumsum(data.cost_descending, axis=1)])
        limit = (n + 1) * budget - worst
        allowed = np.count_nonzero(spent <= limit[:, None] + _EPS, axis=1) - 1
        position = n - 1 - allowed
        deferred = (n - data.at(data.accepted, position)).astype(int)
        deferred_cost = np.take_along_axis(spent, deferred[:, None], axis=1)[:, 0]
        bound = np.where(position == n, self.small_cost, self.small_cost + (deferred_cost + worst) / (n + 1))
        threshold = data.at(data.thresholds, position)
        if budget < 0:
            threshold = np.full(data.m, np.nan)
        best = {"cost_per_1k": np.full(data.m, 1000.0 * self.small_cost)}
        return _Solution(threshold, {"cost_per_1k": 1000.0 * bound}, best)

    def _method(self) -> str:
        return "conformal risk control"

    def _statement(self) -> str:
        worst = "the dearest calibration request" if self.max_expert_cost is None else str(self.max_expert_cost)
        return f"E[cost_per_1k] ≤ {self.target_per_1k} on exchangeable requests whose expert cost is at most {worst}"

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        return (
            f"cost per 1k ≤ {self.target_per_1k} is below the small tier's own cost: the best achievable is "
            f"{best['cost_per_1k']:.4g} per 1k (never deferring)"
        )


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
        _check_rate("alpha", self.alpha)
        if self.n_grid < 1:
            raise ValueError(f"n_grid must be at least 1, got {self.n_grid}")

    def _solve(self, data: _Sorted) -> _Solution:
        assert data.errors is not None
        level = self.delta / self.n_grid
        positions = data.grid(self.n_grid)
        accepted, errors = data.at(data.accepted, positions), data.at(data.errors, positions)
        upper = clopper_pearson_upper(errors, accepted, level)
        valid = binomial_p_value(errors, accepted, self.alpha) <= level
        chosen = _last_true(valid)
        feasible = chosen >= 0
        pick = np.maximum(chosen, 0)[:, None]
        threshold = np.where(feasible, data.at(data.thresholds, np.take_along_axis(positions, pick, 1)[:, 0]), np.nan)
        bound = np.where(feasible, np.take_along_axis(upper, pick, 1)[:, 0], np.nan)
        lowest = np.argmin(upper, axis=1)[:, None]
        best = {
            "accepted_error": np.take_along_axis(upper, lowest, 1)[:, 0],
            "defer_rate": 1.0 - np.take_along_axis(accepted, lowest, 1)[:, 0] / data.n,
        }
        return _Solution(threshold, {"accepted_error": bound}, best)

    def _method(self) -> str:
        return f"Learn-then-Test (binomial p-values, Bonferroni over {self.n_grid} thresholds)"

    def _statement(self) -> str:
        return f"P(accepted_error > {self.alpha}) ≤ {self.delta} over the draw of the calibration split"

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        return (
            f"accepted error ≤ {self.alpha} cannot be certified at δ={self.delta} with n={n}: the lowest "
            f"certifiable accepted error is {best['accepted_error']:.4g} (deferring {best['defer_rate']:.1%})"
        )


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
        _check_rate("alpha", self.alpha)
        _check_rate("max_rate", self.max_rate)
        if self.procedure not in ("fixed-sequence", "bonferroni"):
            raise ValueError(f"procedure must be 'fixed-sequence' or 'bonferroni', got '{self.procedure}'")
        if self.n_grid < 1:
            raise ValueError(f"n_grid must be at least 1, got {self.n_grid}")

    def _solve(self, data: _Sorted) -> _Solution:
        if self.procedure == "bonferroni":
            return self._solve_bonferroni(data)
        return self._solve_fixed_sequence(data)

    def _solve_fixed_sequence(self, data: _Sorted) -> _Solution:
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
        threshold = np.where(feasible, data.at(data.thresholds, start + np.maximum(chosen, 0)), np.nan)
        bound = {
            "accepted_error": np.where(feasible, clopper_pearson_upper(picked_errors, picked_accepted, level), np.nan),
            "defer_rate": np.where(feasible, clopper_pearson_upper(n - picked_accepted, n, level), np.nan),
        }
        best = {
            "accepted_error": clopper_pearson_upper(errors[:, 0], accepted[:, 0], level),
            "defer_rate": 1.0 - accepted[:, 0] / n,
        }
        return _Solution(threshold, bound, best)

    def _solve_bonferroni(self, data: _Sorted) -> _Solution:
        assert data.errors is not None
        n, level = data.n, self.delta / self.n_grid
        positions = data.grid(self.n_grid)
        accepted, errors = data.at(data.accepted, positions), data.at(data.errors, positions)
        rate_ok = binomial_p_value(n - accepted, n, self.max_rate) <= level
        valid = rate_ok & (binomial_p_value(errors, accepted, self.alpha) <= level)
        chosen = _last_true(valid)
        feasible = chosen >= 0
        pick = np.maximum(chosen, 0)[:, None]
        error_upper = clopper_pearson_upper(errors, accepted, level)
        rate_upper = clopper_pearson_upper(n - accepted, n, level)
        threshold = np.where(feasible, data.at(data.thresholds, np.take_along_axis(positions, pick, 1)[:, 0]), np.nan)
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
        return _Solution(threshold, bound, best)

    def _method(self) -> str:
        if self.procedure == "bonferroni":
            return f"Learn-then-Test (binomial p-values, Bonferroni over {self.n_grid} thresholds)"
        return "Learn-then-Test (binomial p-values, fixed-sequence testing, δ/2 per family)"

    def _statement(self) -> str:
        return (
            f"P(accepted_error > {self.alpha} or defer_rate > {self.max_rate}) ≤ {self.delta} "
            "over the draw of the calibration split"
        )

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        return (
            f"accepted error ≤ {self.alpha} with deferral rate ≤ {self.max_rate} cannot be certified at "
            f"δ={self.delta} with n={n}: within that deferral budget the lowest certifiable accepted error is "
            f"{best['accepted_error']:.4g} (deferring {best['defer_rate']:.1%})"
        )


def _last_true(mask: np.ndarray) -> np.ndarray:
    """Index of the last ``True`` in each row, ``-1`` for rows without one."""
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, -1)


def make_tuner(budget: BudgetConfig, cost: CostModel | None = None) -> BudgetTuner:
    """The tuner a :class:`~cascade.config.BudgetConfig` describes.

    >>> make_tuner(BudgetConfig(kind="rate", target=0.15, delta=0.05))
    RateTuner(delta=0.05, target=0.15)
    """
    if budget.kind == "rate":
        return RateTuner(target=budget.target, delta=budget.delta)
    if budget.kind == "cost":
        return CostTuner(target_per_1k=budget.target, small_cost=cost.small_per_call if cost else 0.0)
    if budget.delta is None:
        raise ValueError(f"budget.delta: a '{budget.kind}' budget is guaranteed with probability 1-δ; set delta")
    if budget.kind == "accepted-error":
        return AcceptedErrorTuner(alpha=budget.target, delta=budget.delta)
    if budget.max_rate is None:
        raise ValueError("budget.max_rate: a 'joint' budget needs the deferral-rate bound max_rate")
    return JointTuner(alpha=budget.target, max_rate=budget.max_rate, delta=budget.delta)

