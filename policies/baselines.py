"""Reference policies for cost-accuracy curves: random (seeded), oracle, never, always.

The oracle is a bound, not a deployable policy: it scores with the outcomes of the very samples
it scores, ``gain = expert_correct - small_correct`` (ties broken by position), so at threshold 0
it defers exactly the samples the small tier gets wrong and the expert gets right.

>>> import numpy as np
>>> OraclePolicy().score(np.zeros((3, 2)), small_correct=[1, 0, 0], expert_correct=[1, 1, 0]) > 0
array([False,  True, False])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from policies.base import PolicyBase, check_outcomes


def deferral_gain(small_correct: ArrayLike, expert_correct: ArrayLike) -> np.ndarray:
    """Per-sample accuracy gained by deferring: +1 (expert fixes it), 0, or -1 (expert breaks it)."""
    return np.asarray(expert_correct, dtype=float).reshape(-1) - np.asarray(small_correct, dtype=float).reshape(-1)


class RandomPolicy(PolicyBase):
    """Uniform random scores from a seeded stream (the stream restarts at ``fit`` and at load).

    >>> RandomPolicy(seed=0).fit(np.zeros((2, 2)), [1, 1], [1, 1]).score(np.zeros((2, 2))).round(3)
    array([0.637, 0.27 ])
    """

    kind = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(
        self,
        features: ArrayLike,
        small_correct: ArrayLike,
        expert_correct: ArrayLike,
        cost: ArrayLike | None = None,
    ) -> RandomPolicy:
        super().fit(features, small_correct, expert_correct, cost)
        self.rng_ = np.random.default_rng(self.seed)
        return self

    def score(self, features: ArrayLike) -> np.ndarray:
        features = self._features(features)
        if not hasattr(self, "rng_"):
            self.rng_ = np.random.default_rng(self.seed)
        return self.rng_.random(len(features))


class OraclePolicy(PolicyBase):
    """Scores by the realised gain of deferring; needs the outcomes of the samples it scores.

    Ties are broken by position (scores ``gain - 0.5 * i / n``, all distinct), so a threshold can
    defer any number of samples gain-first: the oracle bounds every policy at every deferral rate,
    not only where a whole group of equal gains ends. ``score > 0`` still defers exactly the
    samples the expert fixes.
    """

    kind = "oracle"

    def score(
        self,
        features: ArrayLike,
        small_correct: ArrayLike | None = None,
        expert_correct: ArrayLike | None = None,
    ) -> np.ndarray:
        features = self._features(features)
        if small_correct is None or expert_correct is None:
            raise ValueError("the oracle scores with the outcomes: pass small_correct and expert_correct")
        check_outcomes(len(features), small_correct, expert_correct)
        n = len(features)
        return deferral_gain(small_correct, expert_correct) - 0.5 * np.arange(n) / max(n, 1)


class NeverPolicy(PolicyBase):
    """Never defers: every score is ``-inf``, which no threshold is below."""

    kind = "never"

    def score(self, features: ArrayLike) -> np.ndarray:
        return np.full(len(self._features(features)), -np.inf)


class AlwaysPolicy(PolicyBase):
    """Always defers (for any finite threshold): every score is ``+inf``."""

    kind = "always"

    def score(self, features: ArrayLike) -> np.ndarray:
        return np.full(len(self._features(features)), np.inf)
