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

from cascade.features import entropy_uncertainty, margin_uncertainty, max_prob_uncertainty, uncertainty_features
from policies.base import PolicyBase, class_probabilities

__all__ = ["ConfidencePolicy", "EntropyPolicy", "MarginPolicy", "entropy_uncertainty", "margin_uncertainty",
           "max_prob_uncertainty", "uncertainty_features"]


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
