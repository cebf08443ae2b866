"""The shared shape of a budget tuner: ``fit`` on one certify set, ``fit_thresholds`` on many.

A subclass says what it controls (``targets``), how it solves for the threshold (``_solve`` on a
:class:`~policies.tuners.risks.RiskTable`) and what it certifies (method, statement, message
when the target is infeasible); this class checks the inputs, runs the solver and writes the
:class:`~policies.certificate.Certificate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator

from policies.certificate import IN_EXPECTATION, WITH_PROBABILITY, BudgetKind, Certificate, Guarantee, InfeasibleTarget
from policies.tuners.risks import RiskTable

EPS = 1e-9


@dataclass
class Solution:
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
        self,
        scores: ArrayLike,
        small_correct: ArrayLike | None = None,
        expert_cost: ArrayLike | None = None,
        *,
        part: str = "certify",
    ) -> Self:
        """Pick the threshold on one certify set; set ``threshold_`` and ``certificate_``.

        ``part`` names the data the scores come from; the certificate records it with ``n``. The
        guarantee needs those samples to be exchangeable with the served ones: nothing that
        produced the scores (calibrator, learned policy) may have been fitted on them.
        """
        scores, small_correct, expert_cost = self._inputs(scores, small_correct, expert_cost)
        solution = self._solve(RiskTable(scores, small_correct, expert_cost))
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
            part=part,
        )
        return self

    def fit_thresholds(
        self, scores: ArrayLike, small_correct: ArrayLike | None = None, expert_cost: ArrayLike | None = None
    ) -> np.ndarray:
        """Thresholds for each row of ``scores`` (one certify set per row); NaN where infeasible."""
        return self._solve(RiskTable(*self._inputs(scores, small_correct, expert_cost))).threshold

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
                raise ValueError(f"{type(self).__name__} needs {name} on the certify part")
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


def check_rate(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
