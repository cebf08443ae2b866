"""Offline evaluation of policies and tuners on held-out outcomes, vectorised over samples and splits.

* :func:`deferral_curve`: system accuracy when the ``k`` highest-scoring samples are deferred,
  for every ``k`` at once (sort once, cumulative sum);
* :func:`budget_adherence`: refit a tuner on many random calibration/test splits of a pool and
  report how the realised metrics on the test parts compare with the targets (ties broken
  per sample, :mod:`policies.ties`).

>>> import numpy as np
>>> deferral_curve(np.array([0.9, 0.1, 0.5]), small_correct=[0, 1, 1], expert_correct=[1, 1, 0]).tolist()
[0.6666666666666666, 1.0, 0.6666666666666666, 0.6666666666666666]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from policies.baselines import deferral_gain
from policies.ties import canonical
from policies.tuners import BudgetTuner


def deferral_curve(scores: ArrayLike, small_correct: ArrayLike, expert_correct: ArrayLike,
                   tie_keys: ArrayLike | None = None) -> np.ndarray:
    """Accuracy after deferring the ``k`` highest scores, ``k = 0..n``: in ``(canonical score, tie key)``
    order, as the served rule splits ties (:mod:`policies.ties`); without keys, ties in index order."""
    canonical_scores = canonical(scores).reshape(-1)
    keys = np.zeros(len(canonical_scores)) if tie_keys is None else np.asarray(tie_keys, dtype=float).reshape(-1)
    order = np.lexsort((-keys, -canonical_scores))
    gain = deferral_gain(small_correct, expert_correct)[order]
    n = len(gain)
    base = np.asarray(small_correct, dtype=float).reshape(-1).mean()
    return base + np.concatenate([[0.0], np.cumsum(gain)]) / n


def random_splits(n: int, calibration_size: int, n_splits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(calibration, test)`` of shapes ``(n_splits, calibration_size)`` and ``(n_splits, rest)``."""
    if not 0 < calibration_size < n:
        raise ValueError(f"calibration_size must be in (0, {n}), got {calibration_size}")
    permutations = np.argsort(np.random.default_rng(seed).random((n_splits, n)), axis=1)
    return permutations[:, :calibration_size], permutations[:, calibration_size:]


@dataclass(frozen=True)
class Adherence:
    """Realised target metrics on the test part of each split; NaN where the tuner refused.

    A split *violates* the budget when any metric exceeds its target; a refusal (infeasible
    target) is not a violation, which is how Learn-then-Test and Clopper-Pearson guarantees are
    stated. Means are over the splits where the tuner picked a threshold.
    """

    targets: dict[str, float]
    guarantee: str
    delta: float | None
    realised: dict[str, np.ndarray]

    @property
    def refused(self) -> np.ndarray:
        return np.isnan(next(iter(self.realised.values())))

    @property
    def violated(self) -> np.ndarray:
        """Per split: some metric exceeds its target."""
        return np.any([np.nan_to_num(self.realised[m], nan=-np.inf) > t for m, t in self.targets.items()], axis=0)

    def summary(self) -> dict[str, Any]:
        """Per-metric mean with a 95% Monte-Carlo interval; violation and refusal frequencies."""
        metrics = {}
        for metric, target in self.targets.items():
            values = self.realised[metric][~self.refused]
            mean = float(values.mean()) if len(values) else float("nan")
            error = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
            metrics[metric] = {
                "target": target, "mean": mean, "standard_error": error,
                "ci95": [mean - 1.96 * error, mean + 1.96 * error],
            }
        return {
            "guarantee": self.guarantee,
            "delta": self.delta,
            "splits": len(self.refused),
            "violation_rate": float(self.violated.mean()),
            "refusal_rate": float(self.refused.mean()),
            "metrics": metrics,
        }


def budget_adherence(
    tuner: BudgetTuner,
    scores: ArrayLike,
    small_correct: ArrayLike | None = None,
    expert_cost: ArrayLike | None = None,
    *,
    tie_keys: ArrayLike | None = None,
    calibration_size: int,
    n_splits: int = 200,
    seed: int = 0,
) -> Adherence:
    """Certify ``tuner`` on ``n_splits`` random certify parts of the pool; measure on the rest.

    ``tie_keys`` (one per pool sample, :func:`policies.ties.tie_keys`) break ties at the threshold
    in certification and measurement alike, as in serving.
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    calibration, test = random_splits(len(scores), calibration_size, n_splits, seed)
    correct = None if small_correct is None else np.asarray(small_correct, dtype=bool).reshape(-1)
    cost = None if expert_cost is None else np.asarray(expert_cost, dtype=float).reshape(-1)
    keys = None if tie_keys is None else np.asarray(tie_keys, dtype=float).reshape(-1)

    def part(values: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
        return None if values is None else values[index]

    cut = tuner.fit_cuts(scores[calibration], part(correct, calibration), part(cost, calibration),
                         part(keys, calibration))
    realised = tuner.evaluate(scores[test], cut.threshold, part(correct, test), part(cost, test),
                              tie_breaks=cut.tie_break, tie_keys=part(keys, test))
    refused = np.isnan(cut.threshold)
    return Adherence(
        targets=tuner.targets,
        guarantee=tuner.guarantee,
        delta=tuner.delta,
        realised={metric: np.where(refused, np.nan, realised[metric]) for metric in tuner.targets},
    )
