"""Calibration metrics on ``(n, k)`` probabilities and integer labels.

* :func:`ece`: expected calibration error of the top-label confidence, 15 equal-width bins;
* :func:`adaptive_ece`: the same with equal-mass bins (each holds ~n/15 samples);
* :func:`brier`: mean squared error of the probability vector against the one-hot label,
  halved for two classes so it equals the usual binary Brier score ``mean((p1 - y)^2)``;
* :func:`nll`: mean negative log-likelihood of the true label;
* :func:`reliability`: per-bin confidence, accuracy and counts (the data of a reliability diagram).

>>> import numpy as np
>>> probs, y = np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([1, 0])
>>> round(brier(probs, y), 3)
0.025
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cascade.calibration.calibrators import EPS, check_probs

N_BINS = 15


@dataclass(frozen=True)
class Reliability:
    """Per-bin mean confidence, accuracy and sample count (empty bins have count 0 and NaN means)."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def gap(self) -> float:
        """The count-weighted mean of ``|accuracy - confidence|``: the ECE of these bins."""
        used = self.count > 0
        return float(np.sum(self.count[used] * np.abs(self.accuracy[used] - self.confidence[used])) / self.count.sum())


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS, adaptive: bool = False) -> Reliability:
    """Bin the top-label confidence (equal width, or equal mass with ``adaptive``)."""
    probs = check_probs(probs, y)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y)).astype(float)
    if adaptive:
        edges = np.quantile(confidence, np.linspace(0.0, 1.0, n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return Reliability(edges=edges, confidence=mean_confidence, accuracy=accuracy, count=count)


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins."""
    return reliability(probs, y, n_bins).gap


def adaptive_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error with equal-mass bins (robust when confidences crowd near 1)."""
    return reliability(probs, y, n_bins, adaptive=True).gap


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score; for two classes it equals ``mean((p_1 - y)^2)``."""
    probs = check_probs(probs, y)
    onehot = np.eye(probs.shape[1])[np.asarray(y, dtype=int)]
    score = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    return score / 2.0 if probs.shape[1] == 2 else score


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true label (probabilities clipped at 1e-12)."""
    probs = check_probs(probs, y)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(probs)), np.asarray(y, dtype=int)], EPS, 1.0))))


def calibration_summary(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """All four metrics in one dict (what benchmarks and reports print)."""
    return {"ece": ece(probs, y), "adaptive_ece": adaptive_ece(probs, y), "brier": brier(probs, y), "nll": nll(probs, y)}
