"""Cascade curves over every deferral threshold, vectorised.

Deferring follows the served tie rule (:mod:`policies.ties`): a sample is answered by the expert
when its score is above the threshold, or equal to it and its tie key above the tie cut (scores
compared on the canonical grid of :func:`policies.ties.canonical`); every other sample by the
small tier. Sorting the samples once by ``(score, tie key)``, descending, turns every rule into a
prefix of that order, so accuracy, F1 and cost for all n+1 prefixes come from cumulative sums:
O(n log n) in all. With tie keys a curve splits a tie where a served rule would; without them
tied scores stay together, and the curve has one point per distinct score plus "defer nothing".

>>> import numpy as np
>>> curve = sweep(np.array([0.9, 0.1, 0.5]), small_pred=np.array([0, 1, 1]), expert_pred=np.array([1, 1, 1]),
...               y=np.array([1, 1, 1]), expert_cost=np.ones(3))
>>> curve.defer_rate.round(3).tolist(), curve.accuracy.round(3).tolist()
([0.0, 0.333, 0.667, 1.0], [0.667, 1.0, 1.0, 1.0])
>>> plateau = dict(scores=np.array([0.5, 0.5, 0.5, 0.9]), small_pred=np.zeros(4), expert_pred=np.ones(4),
...                y=np.ones(4), expert_cost=np.ones(4))
>>> sweep(**plateau).defer_rate.tolist()
[0.0, 0.25, 1.0]
>>> split = sweep(**plateau, tie_keys=np.array([0.2, 0.7, 0.4, 0.1]))
>>> split.defer_rate.tolist(), split.threshold.tolist(), split.tie_break.tolist()
([0.0, 0.25, 0.5, 0.75, 1.0], [0.9, 0.5, 0.5, 0.5, -inf], [0.1, 0.7, 0.4, 0.2, 0.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

from policies.ties import NO_TIE_BREAK, canonical, defer_mask


RULE = ("threshold", "tie_break")
"""the columns of a :class:`Curve` that name its deferral rules"""


@dataclass(frozen=True)
class Curve:
    """One point per reachable deferral set, from "defer nothing" to "defer everything".

    Point ``i`` is the rule ``(threshold[i], tie_break[i])`` of :func:`policies.ties.defer_mask`.
    """

    threshold: np.ndarray
    tie_break: np.ndarray
    defer_rate: np.ndarray
    accuracy: np.ndarray
    f1: np.ndarray
    cost_per_1k: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        """Every column as a list; metrics rounded to 6 decimals, the rules exact (they can be served)."""
        return {name: (getattr(self, name) if name in RULE else np.round(getattr(self, name), 6)).tolist()
                for name in self.__dataclass_fields__}

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
    tie_keys: ArrayLike | None = None,
) -> Curve:
    """Accuracy, F1 (of ``positive``) and cost per 1k requests at every rule.

    ``tie_keys`` (:func:`policies.ties.tie_keys` of the same samples, with the budget's seed)
    let a rule split tied scores as serving does; without them a tie is deferred whole.
    """
    scores = canonical(scores)
    n = len(scores)
    keys = np.zeros(n) if tie_keys is None else np.asarray(tie_keys, dtype=float)
    order = augmented_order(scores, keys)
    sorted_scores, sorted_keys = scores[order], keys[order]
    # A prefix of length m is reachable only where (score, key) changes (equal pairs stay together).
    changes = (sorted_scores[1:] != sorted_scores[:-1]) | (sorted_keys[1:] != sorted_keys[:-1])
    m = np.flatnonzero(np.concatenate([[True], changes, [True]]))

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
    # The prefix of length m is the rule at the first kept sample's (score, key) (-inf: defer all).
    threshold = np.concatenate([sorted_scores, [-np.inf]])[m]
    cuts = np.full(n, NO_TIE_BREAK) if tie_keys is None else sorted_keys
    return Curve(
        threshold=threshold,
        tie_break=np.concatenate([cuts, [0.0]])[m],
        defer_rate=m / max(n, 1),
        accuracy=correct / max(n, 1),
        f1=f1,
        cost_per_1k=1000.0 * cost / max(n, 1),
    )


def augmented_order(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Sample indices by ``(score, key)``, descending (stable): the order in which rules defer them."""
    return np.lexsort((-keys, -scores))


def sweep_naive(scores: np.ndarray, small_pred: np.ndarray, expert_pred: np.ndarray, y: np.ndarray,
                expert_cost: np.ndarray, small_cost: np.ndarray | None = None, positive: int = 1,
                tie_keys: ArrayLike | None = None) -> Curve:
    """The same curve, one rule at a time with :func:`policies.ties.defer_mask` (O(n^2)): the
    reference the tests and benchmark use."""
    scores = canonical(scores)
    keys = None if tie_keys is None else np.asarray(tie_keys, dtype=float)
    pairs = np.unique(np.column_stack([scores, np.zeros(len(scores)) if keys is None else keys]), axis=0)[::-1]
    thresholds = np.concatenate([pairs[:, 0], [-np.inf]])
    tie_breaks = np.concatenate([np.full(len(pairs), NO_TIE_BREAK) if keys is None else pairs[:, 1], [0.0]])
    rows = []
    for threshold, tie_break in zip(thresholds, tie_breaks):
        defer = defer_mask(scores, threshold, tie_break, keys)
        pred = np.where(defer, expert_pred, small_pred)
        tp = np.sum((pred == positive) & (y == positive))
        fp = np.sum((pred == positive) & (y != positive))
        fn = np.sum((pred != positive) & (y == positive))
        cost = (0.0 if small_cost is None else np.sum(small_cost)) + np.sum(np.asarray(expert_cost)[defer])
        rows.append((defer.mean(), np.mean(pred == y), 2 * tp / max(2 * tp + fp + fn, 1), 1000 * cost / len(y)))
    rate, accuracy, f1, cost = (np.array(column, dtype=float) for column in zip(*rows))
    return Curve(threshold=thresholds, tie_break=tie_breaks, defer_rate=rate, accuracy=accuracy, f1=f1,
                 cost_per_1k=cost)


def auroc_curve(scores: np.ndarray, small_prob: np.ndarray, expert_prob: np.ndarray, y: np.ndarray,
                rates: np.ndarray, tie_keys: ArrayLike | None = None) -> np.ndarray:
    """AUROC of the cascade's positive-class probability at each deferral rate in ``rates``.

    Samples are deferred in :func:`sweep`'s ``(score, tie key)`` order. AUROC is a ranking metric
    over the whole set, so it has no prefix-sum form; it is evaluated on a grid of rates
    (O(grid * n log n)).
    """
    scores = canonical(scores)
    order = augmented_order(scores, np.zeros(len(scores)) if tie_keys is None else np.asarray(tie_keys, dtype=float))
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
