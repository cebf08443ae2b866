"""The deferral-policy contract: fit on held-out outcomes; ``score`` is higher for "defer first".

A policy only ranks samples. Whether a sample is deferred is decided elsewhere, always with the
same rule: **a sample is deferred when ``score > threshold``, or when it ties with the threshold and
its tie key exceeds the tie cut** (:func:`policies.ties.defer_mask`). Thresholds come from
the budget tuners (:mod:`policies.tuners`) or the online controller (:mod:`policies.online`).

Features are a 2-D array whose first ``n_classes`` columns are the small tier's *calibrated*
class probabilities; further columns (e.g. an embedding) are extra features that learned policies
may use. With ``n_classes=None`` every column is a probability; a 1-D array is read as the
positive-class probability of a binary detector.

>>> import numpy as np
>>> from policies import ConfidencePolicy
>>> ConfidencePolicy().score(np.array([[0.9, 0.1], [0.55, 0.45]])).round(2)
array([0.1 , 0.45])
"""

from __future__ import annotations

from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from cascade.persistence import Persistent, SavedFormat

MANIFEST_KIND = "cascade.policies"  # the manifest kind of every directory this package saves
POLICY_FORMAT = SavedFormat("policy", "policy.json", "cascade.policy", MANIFEST_KIND)


@runtime_checkable
class DeferralPolicy(Protocol):
    """Anything that can be fitted on outcomes and scores samples (higher = defer first)."""

    def fit(
        self,
        features: ArrayLike,
        small_correct: ArrayLike,
        expert_correct: ArrayLike,
        cost: ArrayLike | None = None,
    ) -> Any: ...

    def score(self, features: ArrayLike) -> np.ndarray: ...


class PolicyBase(Persistent):
    """sklearn-style base: hyper-parameters in ``__init__``, learned state in ``*_`` attributes.

    Subclasses set ``kind`` (the name used by :func:`policies.make_policy` and in saved files),
    implement :meth:`score`, and list the learned attributes to persist: JSON-able ones in
    ``_json_state``, scikit-learn estimators (saved with skops) in ``_estimator_state``.
    ``save`` / ``load`` come from :class:`cascade.persistence.Persistent` (``policy.json``, skops
    files, checksummed). Rules and baselines score without being fitted, so their feature count is
    optional state.
    """

    _format = POLICY_FORMAT
    _json_state = ("n_features_in_",)
    _optional_state = ("n_features_in_",)

    def fit(
        self,
        features: ArrayLike,
        small_correct: ArrayLike,
        expert_correct: ArrayLike,
        cost: ArrayLike | None = None,
    ) -> Self:
        """Check the inputs and record the feature count; rules and baselines learn nothing else."""
        features = as_features(features)
        check_outcomes(len(features), small_correct, expert_correct, cost)
        self.n_features_in_ = features.shape[1]
        return self

    def score(self, features: ArrayLike) -> np.ndarray:
        """Deferral scores, shape ``(n,)``; higher means defer first."""
        raise NotImplementedError

    def _features(self, features: ArrayLike) -> np.ndarray:
        features = as_features(features)
        expected = getattr(self, "n_features_in_", None)
        if expected is not None and features.shape[1] != expected:
            raise ValueError(f"{type(self).__name__} was fitted on {expected} feature columns, got {features.shape[1]}")
        return features


def as_features(features: ArrayLike) -> np.ndarray:
    """A 2-D float array; a 1-D array becomes ``[1 - p, p]`` (binary positive-class probability)."""
    array = np.asarray(features, dtype=float)
    if array.ndim == 1:
        return np.column_stack([1.0 - array, array])
    if array.ndim != 2:
        raise ValueError(f"features must be a 1-D or 2-D array, got {array.ndim} dimensions")
    return array


def class_probabilities(features: np.ndarray, n_classes: int | None) -> np.ndarray:
    """The first ``n_classes`` columns (all columns when ``None``), checked to hold ≥ 2 classes."""
    probabilities = features if n_classes is None else features[:, :n_classes]
    if probabilities.shape[1] < 2:
        raise ValueError(f"need at least 2 class-probability columns, got {probabilities.shape[1]}")
    return probabilities


def check_outcomes(
    n: int,
    small_correct: ArrayLike | None,
    expert_correct: ArrayLike | None,
    cost: ArrayLike | None = None,
) -> None:
    """Raise if any given per-sample array does not have ``n`` entries."""
    for name, values in (("small_correct", small_correct), ("expert_correct", expert_correct), ("cost", cost)):
        size = None if values is None else np.asarray(values).size
        if size is not None and size != n:
            raise ValueError(f"{name} has {size} entries, features have {n} rows")
