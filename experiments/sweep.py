"""Cascade curves over every deferral threshold, vectorised.

Deferring means: a sample whose deferral score is strictly above the threshold is answered by the
expert, every other sample by the small tier. Sorting the scores once (descending) turns every
threshold into a prefix of the sorted order, so accuracy, F1 and cost for all n+1 prefixes come
from cumulative sums: O(n log n) in all. Ties in the score are kept together (a threshold cannot
split them), so the curve has one point per distinct score plus "defer nothing".

>>> import numpy as np
>>> curve = sweep(np.array([0.9, 0.1, 0.5]), small_pred=np.array([0, 1, 1]), expert_pred=np.array([1, 1, 1]),
...               y=np.array([1, 1, 1]), expert_cost=np.ones(3))
>>> curve.defer_rate.round(3).tolist(), curve.accuracy.round(3).tolist()
([0.0, 0.333, 0.667, 1.0], [0.667, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class Curve:
    """One point per reachable deferral set, from "defer nothing" to "defer everything"."""

    threshold: np.ndarray
    defer_rate: np.ndarray
    accuracy: np.ndarray
    f1: np.ndarray
    cost_per_1k: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {name: np.round(getattr(self, name), 6).tolist() for name in self.__dataclass_fields__}

    def at_rate(self, rate: float) -> dict[str, float]:
        """The last point whose deferral rate is within ``rate`` (the best a budget allows)."""
        index = int(np.searchsorted(self.defer_rate, rate + 1e-12, side="right") - 1)
        return {name: float(getattr(self, name)[index]) for name in self.__dataclass_fields__}


def sweep(
    scores: np.ndarray,
    small_pred: np.ndarray,
    expert_pred: np.ndarray,
    y: np.ndarray,
    expert_cost: np.ndarray,
    small_cost: np.ndarray | None = None,
    positive: int = 1,
) -> Curve:
    """Accuracy, F1 (of ``positive``) and cost per 1k requests at every threshold."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    # A prefix of length m is reachable only where the score changes (ties stay together).
    boundary = np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1], [True]])
    m = np.flatnonzero(boundary)

    def prefix(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(values[order], dtype=float)])[m]

    y = np.asarray(y)
    small_pred, expert_pred = np.asarray(small_pred), np.asarray(expert_pred)
    small_ok, expert_ok = small_pred == y, expert_pred == y
    correct = small_ok.sum() - prefix(small_ok) + prefix(expert_ok)

    def confusion(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (pred == positive) & (y == positive), (pred == positive) & (y != positive), (pred != positive) & (y == positive)

    tp_s, fp_s, fn_s = confusion(small_pred)
    tp_e, fp_e, fn_e = confusion(expert_pred)
    tp = tp_s.sum() - prefix(tp_s) + prefix(tp_e)
    fp = fp_s.sum() - prefix(fp_s) + prefix(fp_e)
    fn = fn_s.sum() - prefix(fn_s) + prefix(fn_e)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)

    base = 0.0 if small_cost is None else float(np.sum(small_cost))
    cost = base + prefix(np.asarray(expert_cost, dtype=float))
    # The prefix of length m is "defer if score > score of the first kept sample" (-inf: defer all).
    threshold = np.concatenate([sorted_scores, [-np.inf]])[m]
    return Curve(
        threshold=threshold,
        defer_rate=m / max(n, 1),
        accuracy=correct / max(n, 1),
        f1=f1,
        cost_per_1k=1000.0 * cost / max(n, 1),
    )


def sweep_naive(scores: np.ndarray, small_pred: np.ndarray, expert_pred: np.ndarray, y: np.ndarray,
                expert_cost: np.ndarray, small_cost: np.ndarray | None = None, positive: int = 1) -> Curve:
    """The same curve, one threshold at a time (O(n^2)): the reference the tests and benchmark use."""
    scores = np.asarray(scores, dtype=float)
    distinct = np.unique(scores)[::-1]
    thresholds = np.concatenate([distinct, [-np.inf]])
    rows = []
    for threshold in thresholds:
        defer = scores > threshold
        pred = np.where(defer, expert_pred, small_pred)
        tp = np.sum((pred == positive) & (y == positive))
        fp = np.sum((pred == positive) & (y != positive))
        fn = np.sum((pred != positive) & (y == positive))
        cost = (0.0 if small_cost is None else np.sum(small_cost)) + np.sum(np.asarray(expert_cost)[defer])
        rows.append((defer.mean(), np.mean(pred == y), 2 * tp / max(2 * tp + fp + fn, 1), 1000 * cost / len(y)))
    rate, accuracy, f1, cost = (np.array(column, dtype=float) for column in zip(*rows))
    return Curve(threshold=thresholds, defer_rate=rate, accuracy=accuracy, f1=f1, cost_per_1k=cost)


def auroc_curve(scores: np.ndarray, small_prob: np.ndarray, expert_prob: np.ndarray, y: np.ndarray,
                rates: np.ndarray) -> np.ndarray:
    """AUROC of the cascade's positive-class probability at each deferral rate in ``rates``.

    AUROC is a ranking metric over the whole set, so it has no prefix-sum form; it is evaluated on
    a grid of rates (O(grid * n log n)).
    """
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    n = len(order)
    out = np.empty(len(rates))
    if len(np.unique(y)) < 2:
        return np.full(len(rates), np.nan)
    for i, rate in enumerate(rates):
        deferred = order[: int(round(rate * n))]
        mixed = np.array(small_prob, dtype=float, copy=True)
        mixed[deferred] = expert_prob[deferred]
        out[i] = roc_auc_score(y, mixed)
    return out
