"""Per-sample outcomes of a two-tier system, and a simulator of them with known structure.

:class:`DeferralData` holds what every deferral study needs (features, which tier is right,
what the expert costs), whether it comes from real detectors or from :func:`simulate`. The
simulated small tier is *calibrated by construction*: the label is drawn from the very
probability the detector reports. The expert is strong except on a "weak domain" flagged by an
extra feature column (which confidence rules cannot see), and its cost grows with a length
feature.

>>> data = simulate(1000, seed=0)
>>> data.features.shape, round(float(data.small_correct.mean()), 2)
((1000, 4), 0.81)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class DeferralData:
    """Features (class probabilities first, then extra columns) and per-sample outcomes."""

    features: np.ndarray
    small_correct: np.ndarray
    expert_correct: np.ndarray
    expert_cost: np.ndarray
    n_classes: int = 2

    def __post_init__(self) -> None:
        n = len(self.features)
        for name in ("small_correct", "expert_correct", "expert_cost"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, features have {n} rows")

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index: ArrayLike) -> DeferralData:
        index = np.asarray(index)
        return DeferralData(
            self.features[index], self.small_correct[index], self.expert_correct[index],
            self.expert_cost[index], self.n_classes,
        )


def simulate(
    n: int,
    seed: int = 0,
    expert_accuracy: float = 0.97,
    weak_domain_share: float = 0.3,
    weak_domain_accuracy: float = 0.5,
    logit_scale: float = 3.0,
) -> DeferralData:
    """Draw ``n`` samples; columns are ``[p(class 0), p(class 1), weak_domain, log_length]``."""
    rng = np.random.default_rng(seed)
    logits = logit_scale * rng.standard_normal(n)
    positive = 1.0 / (1.0 + np.exp(-logits))
    label = rng.random(n) < positive
    small_correct = (positive > 0.5) == label
    weak_domain = rng.random(n) < weak_domain_share
    accuracy = np.where(weak_domain, weak_domain_accuracy, expert_accuracy)
    expert_correct = rng.random(n) < accuracy
    log_length = rng.normal(6.0, 0.8, n)
    expert_cost = 0.2 + np.exp(log_length) / 1000.0
    features = np.column_stack([1.0 - positive, positive, weak_domain.astype(float), log_length])
    return DeferralData(features, small_correct, expert_correct, expert_cost, n_classes=2)
