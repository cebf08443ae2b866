"""Chow-style confidence rules: defer the samples whose calibrated probabilities are least sure.

Each rule is a fixed function of the class probabilities, so ``fit`` only records the feature
count and ``score`` works without it. All scores lie in ``[0, 1]``.

>>> import numpy as np
>>> probs = np.array([[0.95, 0.05], [0.6, 0.4]])
>>> MarginPolicy().score(probs).round(2)
array([0.1, 0.8])
>>> EntropyPolicy().score(probs).round(2)
array([0.29, 0.97])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy

from policies.base import PolicyBase, class_probabilities


def max_prob_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - max_k p_k``: Chow's rule on calibrated probabilities."""
    return 1.0 - probabilities.max(axis=1)


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: high when the two leading classes are close."""
    top_two = np.partition(probabilities, -2, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by ``log k``, so 1 means uniform."""
    return -xlogy(probabilities, probabilities).sum(axis=1) / np.log(probabilities.shape[1])


def uncertainty_features(probabilities: np.ndarray) -> np.ndarray:
    """The three uncertainties side by side, shape ``(n, 3)``."""
    return np.column_stack(
        [max_prob_uncertainty(probabilities), margin_uncertainty(probabilities), entropy_uncertainty(probabilities)]
    )


class ConfidencePolicy(PolicyBase):
    """Defer by ``1 - calibrated max-probability`` (Chow's rule).

    >>> ConfidencePolicy().score([[0.7, 0.3]]).round(2)
    array([0.3])
    """

    kind = "confidence"

    def __init__(self, n_classes: int | None = None) -> None:
        self.n_classes = n_classes

    def score(self, features: ArrayLike) -> np.ndarray:
        return max_prob_uncertainty(class_probabilities(self._features(features), self.n_classes))


class MarginPolicy(PolicyBase):
    """Defer by ``1 - (top-1 - top-2 probability)``.

    >>> MarginPolicy().score([[0.7, 0.2, 0.1]]).round(2)
    array([0.5])
    """

    kind = "margin"

    def __init__(self, n_classes: int | None = None) -> None:
        self.n_classes = n_classes

    def score(self, features: ArrayLike) -> np.ndarray:
        return margin_uncertainty(class_probabilities(self._features(features), self.n_classes))


class EntropyPolicy(PolicyBase):
    """Defer by the normalised entropy of the class probabilities.

    >>> EntropyPolicy().score([[0.5, 0.5]])
    array([1.])
    """

    kind = "entropy"

    def __init__(self, n_classes: int | None = None) -> None:
        self.n_classes = n_classes

    def score(self, features: ArrayLike) -> np.ndarray:
        return entropy_uncertainty(class_probabilities(self._features(features), self.n_classes))
