"""The shared shape of a budget tuner: ``fit`` on one certify set, ``fit_thresholds`` on many.

A subclass says what it controls (``targets``), how it solves for the threshold (``_solve`` on a
:class:`~policies.tuners.risks.RiskTable`) and what it certifies (method, statement, message
when the target is infeasible); this class checks the inputs, runs the solver and writes the
:class:`~policies.certificate.Certificate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator

from policies.certificate import IN_EXPECTATION, WITH_PROBABILITY, BudgetKind, Certificate, Guarantee, InfeasibleTarget
from policies.ties import defer_mask
from policies.tuners.risks import RiskTable

EPS = 1e-9


@dataclass
class Solution:
    """Per set: the chosen position in the :class:`RiskTable`, the bounds there, and (where no
    position is certified, ``feasible`` False) the best achievable values."""

    position: np.ndarray
    bound: dict[str, np.ndarray]
    best: dict[str, np.ndarray] = field(default_factory=dict)
    feasible: np.ndarray | None = None
    rule: tuple[np.ndarray, np.ndarray] | None = None
    """the chosen fixed rule ``(threshold, tie_break)`` per set, for tuners testing a fixed grid"""
    passed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """tuners testing a fixed grid: ``(thresholds, tie_breaks, passed)``, ``passed`` an ``(m, k)`` mask of
    the grid rules whose tests rejected (certified together)"""


class Cut(NamedTuple):
    """Deferral rules, one per set: defer when ``score > threshold``, or ``score == threshold`` and
    the sample's tie key ``> tie_break`` (:func:`policies.ties.defer_mask`); NaN where infeasible."""

    threshold: np.ndarray
    tie_break: np.ndarray


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
        self,
        scores: ArrayLike,
        small_correct: ArrayLike | None = None,
        expert_cost: ArrayLike | None = None,
        *,
        tie_keys: ArrayLike | None = None,
        tie_seed: int | None = None,
        part: str = "certify",
    ) -> Self:
        """Pick the rule on one certify set; set ``threshold_``, ``tie_break_`` and ``certificate_``.

        ``tie_keys`` (from :func:`policies.ties.tie_keys` with ``tie_seed``) break ties at the
        threshold so that tied scores cannot starve the budget; without them a tie is accepted
        whole. ``part`` names the data the scores come from; the certificate records it with
        ``n``. The guarantee needs those samples to be exchangeable with the served ones: nothing
        that produced the scores (calibrator, learned policy) may have been fitted on them.
        """
        scores, small_correct, expert_cost, keys = self._inputs(scores, small_correct, expert_cost, tie_keys)
        table = RiskTable(scores, small_correct, expert_cost, keys)
        solution = self._solve(table)
        n = scores.shape[1]
        cut = self._cut(table, solution)
        if np.isnan(cut.threshold[0]):
            best = {metric: float(values[0]) for metric, values in solution.best.items()}
            raise InfeasibleTarget(self._infeasible(n, best), best)
        threshold, tie_break = float(cut.threshold[0]), float(cut.tie_break[0])
        achieved = self.evaluate(scores, threshold, small_correct, expert_cost, tie_breaks=tie_break, tie_keys=keys)
        self.threshold_ = threshold
        self.tie_break_ = tie_break
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
            part=part,
            tie_break=tie_break,
            tie_seed=tie_seed if keys is not None else None,
            passed_rules=_passed_rules(solution),
        )
        return self

    def fit_cuts(
        self,
        scores: ArrayLike,
        small_correct: ArrayLike | None = None,
        expert_cost: ArrayLike | None = None,
        tie_keys: ArrayLike | None = None,
    ) -> Cut:
        """The rule for each row of ``scores`` (one certify set per row); NaN thresholds where infeasible."""
        table = RiskTable(*self._inputs(scores, small_correct, expert_cost, tie_keys))
        return self._cut(table, self._solve(table))

    def fit_thresholds(
        self, scores: ArrayLike, small_correct: ArrayLike | None = None, expert_cost: ArrayLike | None = None
    ) -> np.ndarray:
        """Thresholds for each row of ``scores`` without tie-breaking; NaN where infeasible."""
        return self.fit_cuts(scores, small_correct, expert_cost).threshold

    def evaluate(
        self,
        scores: ArrayLike,
        thresholds: ArrayLike,
        small_correct: ArrayLike | None = None,
        expert_cost: ArrayLike | None = None,
        *,
        tie_breaks: ArrayLike | None = None,
        tie_keys: ArrayLike | None = None,
    ) -> dict[str, np.ndarray]:
        """Realised ``defer_rate`` (and ``accepted_error``, ``cost_per_1k`` when given) per row.

        ``accepted_error`` is 0 for a row that accepts nothing.
        """
        scores = np.atleast_2d(np.asarray(scores, dtype=float))
        keys = None if tie_keys is None or tie_breaks is None else np.atleast_2d(np.asarray(tie_keys, dtype=float))
        cuts = None if tie_breaks is None else np.asarray(tie_breaks, dtype=float).reshape(-1, 1)
        defer = defer_mask(scores, np.asarray(thresholds, dtype=float).reshape(-1, 1), cuts, keys)
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

    def _cut(self, table: RiskTable, solution: Solution) -> Cut:
        feasible = np.ones(table.m, dtype=bool) if solution.feasible is None else solution.feasible
        if solution.rule is not None:
            return Cut(np.where(feasible, solution.rule[0], np.nan), solution.rule[1])
        threshold = np.where(feasible, table.at(table.thresholds, solution.position), np.nan)
        return Cut(threshold, table.at(table.tie_breaks, solution.position))

    def _inputs(
        self, scores: ArrayLike, small_correct: ArrayLike | None, expert_cost: ArrayLike | None,
        tie_keys: ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        self._check_params()
        scores = np.atleast_2d(np.asarray(scores, dtype=float))
        if scores.ndim != 2 or scores.shape[1] == 0:
            raise ValueError(f"scores must be a non-empty 1-D array (or 2-D, one set per row), not {scores.shape}")
        if np.isnan(scores).any():
            raise ValueError(f"scores contain NaN ({int(np.isnan(scores).sum())} of {scores.size}); a deferral "
                             "score must be a number for every sample")
        given = {"small_correct": small_correct, "expert_cost": expert_cost, "tie_keys": tie_keys}
        for name in self.needs:
            if given[name] is None:
                raise ValueError(f"{type(self).__name__} needs {name} on the certify part")
        arrays: dict[str, np.ndarray | None] = {}
        for name, values in given.items():
            if values is None:
                arrays[name] = None
                continue
            array = np.atleast_2d(np.asarray(values, dtype=bool if name == "small_correct" else float))
            if array.shape != scores.shape:
                raise ValueError(f"{name} has {array.shape[-1]} entries per set ({array.shape[0]} sets), scores have "
                                 f"{scores.shape[1]} ({scores.shape[0]} sets): one value per scored sample")
            if name != "small_correct" and np.isnan(array).any():
                raise ValueError(f"{name} contain NaN")
            arrays[name] = array
        if arrays["expert_cost"] is not None and (arrays["expert_cost"] < 0).any():
            raise ValueError("expert_cost must be non-negative")
        keys = arrays["tie_keys"]
        if keys is not None and not ((keys >= 0) & (keys < 1)).all():
            raise ValueError("tie_keys must lie in [0, 1) (see policies.ties.tie_keys)")
        return scores, arrays["small_correct"], arrays["expert_cost"], keys

    def _solve(self, data: RiskTable) -> Solution:
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


def _passed_rules(solution: Solution) -> list[tuple[float, float]] | None:
    """The first set's certified grid rules, ordered as the grid is (deferring most first)."""
    if solution.passed is None:
        return None
    thresholds, tie_breaks, passed = solution.passed
    return [(float(thresholds[j]), float(tie_breaks[j])) for j in np.flatnonzero(passed[0])]


def check_rate(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
