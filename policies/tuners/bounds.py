"""Bounds and p-values for binomial proportions (the statistics every tuner certifies with).

>>> float(clopper_pearson_upper(0, 100, 0.05).round(4))
0.0295
>>> float(binomial_p_value(2, 100, 0.1).round(6))
0.001945
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta, binom


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
